.PHONY: test demo lint bench install

install:
	bash scripts/bootstrap.sh

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

bench:
	bash scripts/bench.sh
