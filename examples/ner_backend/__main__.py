"""``python -m examples.ner_backend --host 127.0.0.1 --port 9091 [--data-dir DIR]``."""

import argparse
import os
from pathlib import Path

import uvicorn

from examples.ner_backend.app import create_app
from shared.logging import uvicorn_log_config

SERVICE = "ner-backend"


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the substring-matching named-entity ML backend.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9091)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where learned entities are saved (default: $LABELLOOP_NER_BACKEND_DATA_DIR or .data/ner-backend)",
    )
    args = parser.parse_args()
    level = os.environ.get("LABELLOOP_LOG_LEVEL", "INFO")
    log_json = {"1": True, "true": True, "0": False, "false": False}.get(
        os.environ.get("LABELLOOP_LOG_JSON", "").lower()
    )
    # The same JSON lines (or terminal text) as the labelloop services, uvicorn's own lines included.
    uvicorn.run(
        create_app(args.data_dir),
        host=args.host,
        port=args.port,
        log_config=uvicorn_log_config(SERVICE, level, log_json),
        access_log=False,
    )


if __name__ == "__main__":
    main()
