"""demo/cdc_recipe.py, the CDC recipe of the README, runs and is right.

The recipe is run as users run it, as a program (with the venv's python), against the test
cluster, each time in a database of its own (created here, dropped after), with two seeds and
two batch sizes. It checks itself: the table and its tombstones must be the source's final
state (exit status 0 and "cdc: ok"); and the statistics must agree with the outcomes the calls
returned.
"""

import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

RECIPE = Path(__file__).resolve().parents[2] / "demo" / "cdc_recipe.py"


@pytest.fixture
def fresh_database(dsn):
    name = f"cdc_recipe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield re.sub(r"dbname=\S+", f"dbname={name}", dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_recipe(dsn, *args):
    done = subprocess.run([sys.executable, str(RECIPE), dsn, *args], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.mark.parametrize("seed, batch", [(1, 100), (20241202, 37)])
def test_the_recipe_ends_with_the_sources_final_state(fresh_database, seed, batch):
    out = run_recipe(fresh_database, "--seed", str(seed), "--batch", str(batch))
    print(out)
    assert re.search(r"^cdc: ok: \d+ rows hold their newest values, \d+ deleted keys", out, re.M), out
    assert "the statistics agree with the calls' outcomes" in out, out
    # the stream had every kind of event and outcome worth showing
    for outcome in ("inserted", "updated", "stale", "duplicate"):
        assert re.search(rf"calls: upserts .*\b{outcome} [1-9]", out), (outcome, out)
    for outcome in ("deleted", "absent", "stale", "duplicate"):
        assert re.search(rf"calls: .*; deletes .*\b{outcome} [1-9]", out), (outcome, out)
    assert re.search(r"calls: upserts .*\btie 0\b", out), out


def test_the_recipe_runs_again_on_its_own_leftovers(fresh_database):
    """A second run in the same database starts from a new schema: the same result."""
    first = run_recipe(fresh_database, "--seed", "3")
    again = run_recipe(fresh_database, "--seed", "3")
    assert first == again
    with psycopg.connect(fresh_database) as c:
        assert c.execute("SELECT count(*) FROM cdc_recipe.customers").fetchone()[0] > 0
