"""Schemathesis against the daemon's own OpenAPI schema, over a real uvicorn, on both backends.

Every generated request (examples from the schema's coverage phase, random fuzzing, and
stateful sequences that follow the inferred links: create a run, then use its id) must get a
non-5xx answer whose status code, content type, headers and body conform to the schema.

The request-side checks (``positive_data_acceptance``, ``negative_data_rejection``) and
``allow_header_conformance`` are not part of this gate: they judge how exactly the *request*
schemas describe what the handlers accept (e.g. metric-name syntax, equal-length columns) and
how Starlette answers ``OPTIONS``; their findings are listed in the report, not hidden here.

CI form: ``RHYTHMD_SCHEMATHESIS_EXAMPLES`` cases per operation (default 40) with a fixed seed
(``RHYTHMD_SCHEMATHESIS_SEED``), about 15-30 s per backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Daemon

CHECKS = ",".join((
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "use_after_free",
    "ensure_resource_availability",
))
MAX_EXAMPLES = int(os.environ.get("RHYTHMD_SCHEMATHESIS_EXAMPLES", "40"))
SEED = int(os.environ.get("RHYTHMD_SCHEMATHESIS_SEED", "20240611"))
TIMEOUT_S = 150


def test_schemathesis_finds_no_5xx_and_no_schema_violation(database_url: str,
                                                          tmp_path: Path) -> None:
    daemon = Daemon(database_url, log_path=tmp_path / "daemon.log").start()
    try:
        cli = Path(sys.executable).with_name("schemathesis")
        cmd = [str(cli) if cli.exists() else "schemathesis", "run",
               f"{daemon.url}/openapi.json", "--checks", CHECKS,
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
               "--request-timeout", "10", "--workers", "1", "--no-color",
               "--report", "junit", "--report-dir", str(tmp_path / "report")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "NO_COLOR": "1"}, check=False)
        out = proc.stdout + proc.stderr
        generated = re.search(r"(\d+) generated", out)
        print(f"\nschemathesis on {database_url.split(':')[0]}: "
              f"{generated.group(1) if generated else '?'} generated cases "
              f"(max {MAX_EXAMPLES} per operation, seed {SEED}), exit {proc.returncode}")
        log = (tmp_path / "daemon.log").read_text(errors="replace")
        assert proc.returncode == 0, out[-12000:] + "\n--- daemon log ---\n" + log[-4000:]
        assert generated and int(generated.group(1)) > 100, out[-3000:]
        assert "Traceback" not in log, log[-4000:]
    finally:
        daemon.stop()
