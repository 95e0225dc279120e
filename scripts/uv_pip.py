"""Run `uv pip ARGS...` with the package sources this user's pip would use.

uv reads none of pip's configuration (pip.conf files, PIP_* variables). An install that relies on
them (find-links holding torch's CPU wheel, a mirror as index, a company CA bundle) would silently
go to PyPI instead: `uv pip install torch==2.13.0` then takes a multi-GB CUDA build. This reads
`python -m pip config list` (the merged view of every pip.conf and PIP_* variable, with the
interpreter running this script, whose pip sees what the user's pip sees) and passes each setting
that says where packages come from to uv explicitly, as pip applies them to `pip install`:

    find-links -> --find-links      index-url -> --index-url     extra-index-url -> --extra-index-url
    no-index -> --no-index          constraint -> --constraint   trusted-host -> --allow-insecure-host
    cert -> SSL_CERT_FILE           client-cert -> SSL_CLIENT_CERT
    proxy -> HTTPS_PROXY, HTTP_PROXY                              timeout -> UV_HTTP_TIMEOUT

with `--index-strategy unsafe-best-match`, pip's own rule (the best version over every source);
the installs that use this pass --require-hashes, so a file from the wrong index fails its hash.
uv refuses constraints beside --require-hashes (it wants them pinned with ==), so there the pins of
the -r files are checked against pip's constraints here instead, as pip would, and the constraints
are not passed on. A pip setting about sources that is not in the table stops the install (exit 2) naming it, rather
than being dropped; settings that only change pip's own output (progress bar, version check, ...)
are ignored.

    python scripts/uv_pip.py UV_BINARY install --python .venv/bin/python -r requirements/dev.txt
    python scripts/uv_pip.py --print UV_BINARY install ...   # the command and environment, as JSON
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

# pip applies sections in this order to `pip install`, later ones winning: pip.conf's [global],
# then [install], then PIP_* variables (`pip config list` shows those as ":env:").
SECTIONS = ("global", "install", ":env:")
LIST_OPTIONS = {
    "find-links": "--find-links",
    "extra-index-url": "--extra-index-url",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
VALUE_OPTIONS = {"index-url": "--index-url"}
FLAG_OPTIONS = {"no-index": "--no-index"}
ENV_OPTIONS = {
    "cert": ("SSL_CERT_FILE",),
    "client-cert": ("SSL_CLIENT_CERT",),
    "proxy": ("HTTPS_PROXY", "HTTP_PROXY"),
    "timeout": ("UV_HTTP_TIMEOUT",),
    "default-timeout": ("UV_HTTP_TIMEOUT",),
}
# pip settings that do not change which files an install takes: safe to leave behind.
IGNORED = {
    "disable-pip-version-check",
    "no-cache-dir",
    "cache-dir",
    "progress-bar",
    "quiet",
    "verbose",
    "no-color",
    "log",
    "retries",
    "root-user-action",
    "no-input",
    "require-hashes",
    "no-python-version-warning",
    "break-system-packages",
    "user",
    "no-warn-script-location",
    "no-compile",
    "compile",
    "upgrade-strategy",
    "exists-action",
    "config-file",
    "require-virtualenv",
}
TRUE = {"1", "true", "yes", "on"}


def read_pip_config(python: str = sys.executable) -> list[str]:
    """`pip config list` of ``python``: lines such as ``global.find-links='/opt/wheels'``."""
    result = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def effective_settings(lines: list[str]) -> dict[str, str]:
    """What `pip install` uses, key -> raw value, from `pip config list` lines."""
    by_section: dict[str, dict[str, str]] = {}
    for line in lines:
        name, sep, quoted = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not (sep and dot):
            continue
        try:
            value = ast.literal_eval(quoted)  # pip prints repr(value)
        except (SyntaxError, ValueError):
            continue
        by_section.setdefault(section, {})[key] = str(value)
    out: dict[str, str] = {}
    for section in SECTIONS:
        out.update(by_section.get(section, {}))
    return out


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The uv command-line options and environment variables that carry ``settings``.

    Raises ValueError naming a pip setting that would change which files are installed and that
    uv cannot be told about.
    """
    args = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    for key, value in settings.items():
        if key in LIST_OPTIONS:
            for item in value.split():
                args += [LIST_OPTIONS[key], item]
        elif key in VALUE_OPTIONS:
            args += [VALUE_OPTIONS[key], value]
        elif key in FLAG_OPTIONS:
            if value.strip().lower() in TRUE:
                args.append(FLAG_OPTIONS[key])
        elif key in ENV_OPTIONS:
            for variable in ENV_OPTIONS[key]:
                env[variable] = value  # pip's setting wins over these variables, as in pip
        elif key not in IGNORED:
            raise ValueError(
                f"pip setting {key!r} (= {value!r}) has no uv equivalent here, and dropping it "
                "could change what is installed. Remove it, or install with pip: INSTALLER=pip"
            )
    return args, env


def check_pins_against_constraints(options: list[str], rest: list[str]) -> list[str]:
    """``options`` without its --constraint pairs, after checking every ``name==version`` pin of
    the -r files in ``rest`` against those constraints (ValueError naming a pin they refuse)."""
    from pip._vendor.packaging.requirements import Requirement  # the pip that read the config
    from pip._vendor.packaging.utils import canonicalize_name

    def requirements(path: str) -> list[Requirement]:
        text = Path(path).read_text(encoding="utf-8").replace("\\\n", " ")
        lines = (
            line.split(" #", 1)[0].split(" --hash", 1)[0].strip() for line in text.splitlines()
        )
        return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]

    kept, constraints = [], []
    pairs = iter(options)
    for option in pairs:
        if option == "--constraint":
            constraints += requirements(next(pairs))
        else:
            kept.append(option)
    files = [rest[i + 1] for i, arg in enumerate(rest[:-1]) if arg in ("-r", "--requirement")]
    for path in files:
        for pin in requirements(path):
            if pin.marker is not None and not pin.marker.evaluate():
                continue
            version = next(iter(pin.specifier)).version
            for constraint in constraints:
                if canonicalize_name(constraint.name) == canonicalize_name(pin.name) and not (
                    constraint.specifier.contains(version, prereleases=True)
                ):
                    raise ValueError(f"{path} pins {pin}, pip's constraint {constraint} refuses it")
    return kept


def main(argv: list[str]) -> int:
    show = bool(argv) and argv[0] == "--print"
    argv = argv[1:] if show else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    uv, pip_command, *rest = argv
    try:
        options, env = uv_options(effective_settings(read_pip_config()))
        if "--require-hashes" in rest:
            options = check_pins_against_constraints(options, rest)
    except ValueError as error:
        print(f"uv_pip.py: {error}", file=sys.stderr)
        return 2
    command = [uv, "pip", pip_command, *options, *rest]
    if show:
        print(json.dumps({"command": command, "env": env}))
        return 0
    os.execvpe(uv, command, {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
