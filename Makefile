.PHONY: test demo lint docs bench install

install:
	bash scripts/bootstrap.sh

# Everything CI runs (.ci/run calls this): lint, types, docs, package, the matrix.
test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

docs:
	bash scripts/docs.sh

bench:
	bash scripts/bench.sh
