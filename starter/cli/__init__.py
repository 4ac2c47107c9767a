"""The operator CLI (`dunning …`): commands, rendering, the demo and the local dev stack."""


def main() -> None:
    from starter.cli.app import main as run

    run()
