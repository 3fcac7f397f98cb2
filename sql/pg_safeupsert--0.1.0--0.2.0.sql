-- pg_safeupsert 0.1.0 -> 0.2.0 (unreleased). Every change to the SQL objects made for 0.2.0
-- goes here, in the order it was made, until 0.2.0 is released; from then on this file is
-- frozen too. The upgrade tier (scripts/test-upgrade.sh) checks that 0.1.0 plus this script
-- gives exactly the objects of a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_safeupsert UPDATE" to load this file. \quit
