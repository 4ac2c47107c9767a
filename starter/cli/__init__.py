"""The operator CLI (`dunning …`), one module per role.

- app.py: the commands (Typer), thin: parse, call, print, exit code;
- render.py: how cases look (Rich tables, timeline, amounts, stage colours);
- operator.py: what an operator does to cases, as async functions over a Temporal client;
- demo.py and stripe_events.py: `dunning demo`, signed Stripe test traffic through the API;
- devstack.py: `dunning up`, the local Temporal dev server, worker and API as child processes.

Only app.py imports the others (demo and devstack lazily, so `dunning --help` stays fast);
render, operator and the demo never import the commands.
"""


def main() -> None:
    from starter.cli.app import main as run

    run()
