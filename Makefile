.PHONY: help install lint format test test-all toy conll-hard repro-table4-2 repro-table4-3 repro-fig4-1 repro-ste-fit repro-fig6 repro-fig3 repro-fig4 bench
help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
install:  ## editable install with test tools (README set-up)
	pip install -e ".[test]"
lint:  ## ruff lint + format check + mypy on mtlrun/
	ruff check mtlrun tests scripts && ruff format --check mtlrun tests scripts && mypy
format:  ## ruff format
	ruff format mtlrun tests scripts
test:  ## the test suite (what CI runs)
	pytest
test-all:  ## the suite with real data and GPU tests (needs MTLRUN_DATA and a GPU)
	pytest -m "not nothing"
toy:  ## the default run on the embedded toy set
	mtlrun
conll-hard:  ## hard sharing on CoNLL-2003 with seed 000's settings
	mtlrun experiment=conll_hard
repro-table4-2:  ## seed 000 Table 4.2 (REDUCED=1 for a CPU-sized run)
	scripts/reproduce_table4_2.sh
repro-table4-3:  ## seed 000 Table 4.3, warm-up vs from scratch
	scripts/reproduce_table4_3.sh
repro-fig4-1:  ## seed 000 Figure 4.1, keep-ratio sweep
	scripts/reproduce_fig4_1.sh
repro-ste-fit:  ## seed 000 Appendix A
	scripts/reproduce_ste_fit.sh
repro-fig6:  ## seed 001 Figure 6, loss vs wall time of equal/gradnorm/mgda/hybrid
	scripts/reproduce_fig6.sh
repro-fig3:  ## seed 001 Figure 3, min-norm solver iterations
	scripts/reproduce_fig3.sh
repro-fig4:  ## seed 001 Figure 4, Pareto-stationary share per epoch
	scripts/reproduce_fig4.sh
bench:  ## speed benchmarks (tables): sparse sharing and balancers
	python scripts/bench_sparse.py && python scripts/bench_balancers.py
