from airgap.cli.main import run

run()
