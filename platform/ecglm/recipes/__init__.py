"""One module per CLI command (``ecglm <command>`` -> ``ecglm.recipes.<module>.run``).

Recipes own the process-level lifecycle (Ray started and stopped, MLflow runs, summaries
printed by the CLI); the library below them never starts or stops Ray on its own.
"""
