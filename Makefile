.PHONY: install lint format typecheck test check

install:
	pip install -e '.[test]'

lint:
	ruff check .
	ruff format --check .

format:
	ruff format .
	ruff check --fix .

typecheck:
	mypy

test:
	pytest

check: lint typecheck test
