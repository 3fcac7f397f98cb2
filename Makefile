# Thin: every target is a script in scripts/.
.PHONY: demo test bench install package stop clean

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	@if [ -x scripts/bench.sh ]; then scripts/bench.sh; else echo "make bench: no scripts/bench.sh yet" >&2; exit 1; fi

install:
	scripts/install.sh

# tarballs (and a .deb for 15) in target/packages/
package:
	scripts/package.sh

# stop every private cluster (demo, test, bench, ...)
stop:
	scripts/cluster.sh stop-all

clean: stop
	rm -rf /tmp/pg_safeupsert pgrx-tests/regress/results pgrx-tests/isolation/results
	cargo clean
