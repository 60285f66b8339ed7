"""``python -m batchrl_mtf`` runs the command line."""

from batchrl_mtf.cli import main

main()
