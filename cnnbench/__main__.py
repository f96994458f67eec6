from cnnbench.cli import run

run()
