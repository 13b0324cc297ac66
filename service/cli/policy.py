"""``deidgate policy validate FILE`` and ``deidgate policy explain FILE DICOMFILE``.

``explain`` prints, for every element of one file, the rule that matched and the action it would
take; it never prints values (an operator checking a policy must not see the patient's data).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from service.cli.common import exit_for, state
from service.core.errors import DeidgateError

policy_app = typer.Typer(help="Check and explain de-identification policies.", no_args_is_help=True)


@policy_app.command("validate")
def validate(
    policy: str = typer.Argument(..., help="policy YAML file or shipped policy name"),
) -> None:
    """Load the policy with all its layers; report errors with file, line and key."""
    from workers.deid.policy import load_policy

    try:
        p = load_policy(policy)
    except DeidgateError as exc:
        exit_for(exc)
    opts = ", ".join(sorted(o.value for o in p.options)) or "none"
    typer.echo(f"ok: {p.name} {p.version} (layers: {' -> '.join(p.layers)}; "
               f"{len(p.rules)} rules; options: {opts})")


@policy_app.command("explain")
def explain(
    ctx: typer.Context,
    policy: str = typer.Argument(..., help="policy YAML file or shipped policy name"),
    dicom_file: Path = typer.Argument(..., exists=True, dir_okay=False),  # noqa: B008 - typer idiom
    as_json: bool = typer.Option(False, "--json", help="one JSON object per element"),
) -> None:
    """Show what each rule would do to DICOMFILE; writes nothing, prints no values."""
    from workers.deid.engine import Deidentifier
    from workers.deid.policy import load_policy

    st = state(ctx)
    try:
        d = Deidentifier(load_policy(policy), st.keys(), project=st.settings.project)
        rows = d.explain(dicom_file)
    except DeidgateError as exc:
        exit_for(exc)
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r.__dict__))
        else:
            typer.echo(f"{r.path:<60} {r.tag} {r.vr:<2} {r.action:<12} "
                       f"(rule {r.rule}; {r.written}; {r.via})")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
