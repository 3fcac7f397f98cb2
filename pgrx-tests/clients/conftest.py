"""Fixtures for the client tests: programs talking to a real server, as the users' programs do.

scripts/test-clients.sh runs these against the private test cluster and sets:
  PGHOST, PGPORT, PGUSER, PGDATABASE  where to connect (a fresh database with the extension)
  SAFEUPSERT_CLUSTER                   the cluster's name for scripts/cluster.sh
  SAFEUPSERT_CLUSTER_SH                the path of scripts/cluster.sh

Fixtures:
  dsn          libpq connection string (for psycopg 3, psycopg2, or other processes)
  conn         a psycopg 3 connection in autocommit mode, closed after the test
  connect      connect(**kwargs) -> another psycopg 3 connection, closed after the test
  db           a schema of its own for the test (dropped after it), first on conn's search_path;
               db.table("k int primary key, v text, ver int") creates a table in it and
               returns its qualified name
  fresh_table  the same as db.table
  cluster      cluster.restart() (fast shutdown + start), cluster.crash() (kill -9 of a server
               process: crash recovery), cluster.stop(), cluster.start(); connections made
               before are broken afterwards: open new ones
  private_cluster
               private_cluster(name, conf_lines) -> a PrivateCluster of the module's own, started
               with those postgresql.conf lines on a free port, removed after the module
"""

import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest


def _dsn():
    env = os.environ
    return "host={} port={} user={} dbname={}".format(
        env.get("PGHOST", "127.0.0.1"),
        env.get("PGPORT", "54316"),
        env.get("PGUSER", "postgres"),
        env.get("PGDATABASE", "postgres"),
    )


@pytest.fixture(scope="session")
def dsn():
    return _dsn()


@pytest.fixture
def connect(dsn):
    opened = []

    def _connect(autocommit=True, **kwargs):
        c = psycopg.connect(dsn, autocommit=autocommit, **kwargs)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        c.close()


@pytest.fixture
def conn(connect):
    return connect()


class Db:
    def __init__(self, conn, schema):
        self.conn = conn
        self.schema = schema
        self._n = 0

    def table(self, columns, name=None):
        """Creates a table with the given column list; returns its qualified, quoted name."""
        self._n += 1
        name = name or f"t{self._n}"
        qualified = f'"{self.schema}"."{name}"'
        self.conn.execute(f"CREATE TABLE {qualified} ({columns})")
        return qualified


@pytest.fixture
def db(request, conn, dsn):
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    schema = f"{base}_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f"SET search_path = \"{schema}\", public")
    yield Db(conn, schema)
    # conn may be gone (a restart or a crash in the test): drop with a connection of our own.
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def fresh_table(db):
    return db.table


class Cluster:
    def __init__(self, name, script):
        self.name = name
        self.script = script

    def _run(self, *args):
        subprocess.run([self.script, *args], check=True, stdout=subprocess.DEVNULL)

    def restart(self):
        self._run("restart", self.name)

    def crash(self):
        self._run("crash", self.name)

    def stop(self):
        self._run("stop", self.name)

    def start(self):
        """Starts the stopped cluster again, with its data."""
        self._run("start", "--keep", self.name, os.environ.get("PGPORT", "54316"))


@pytest.fixture
def cluster():
    name = os.environ.get("SAFEUPSERT_CLUSTER")
    script = os.environ.get("SAFEUPSERT_CLUSTER_SH")
    if not name or not script:
        pytest.fail("SAFEUPSERT_CLUSTER / SAFEUPSERT_CLUSTER_SH not set (run scripts/test-clients.sh)")
    c = Cluster(name, script)
    yield c
    # leave the server up for the next test, whatever this one did
    if subprocess.run([script, "status", name], stdout=subprocess.DEVNULL).returncode != 0:
        c.start()


# ---------------------------------------------------------------------------------------------
# private clusters of a test module's own (other postmaster settings, no preload, a crafted file)
# ---------------------------------------------------------------------------------------------


def cluster_script():
    return os.environ.get("SAFEUPSERT_CLUSTER_SH") or str(Path(__file__).resolve().parents[2] / "scripts" / "cluster.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """A server of its own, started by scripts/cluster.sh with extra postgresql.conf lines, on a
    free port, under a name of this run alone (concurrent runs do not collide)."""

    def __init__(self, name, conf=()):
        self.script = cluster_script()
        self.name = f"{name}_{os.getpid()}"
        self.port = free_port()
        self.conf = list(conf)
        out = subprocess.run([self.script, "datadir", self.name], check=True, capture_output=True, text=True)
        self.data = Path(out.stdout.strip())
        self.log = self.data.parent / "server.log"

    def _run(self, *args):
        # PGUSER/PGDATABASE for the pg_isready that cluster.sh runs
        env = {**os.environ, "PGUSER": "postgres", "PGDATABASE": "postgres"}
        subprocess.run([self.script, *args], check=True, stdout=subprocess.DEVNULL, env=env)

    def start(self):
        """Starts the cluster: its existing data, or a fresh one with `conf`."""
        self._run("start", "--keep", self.name, str(self.port), *self.conf)

    def crash(self):
        self._run("crash", self.name)

    def stop(self):
        self._run("stop", self.name)

    def restart(self):
        self._run("restart", self.name)

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        if not os.environ.get("SAFEUPSERT_KEEP_CLUSTERS"):
            shutil.rmtree(self.data.parent, ignore_errors=True)

    def dsn(self, dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname="postgres", autocommit=True, **kwargs):
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def log_text(self):
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def private_cluster():
    """private_cluster(name, conf) -> a started PrivateCluster, removed after the module."""
    made = []

    def _make(name, conf=()):
        c = PrivateCluster(name, conf)
        made.append(c)
        c.start()
        return c

    yield _make
    for c in made:
        c.remove()
