"""``python -m examples.ner_backend --host 127.0.0.1 --port 9091 [--data-dir DIR]``."""

import argparse
from pathlib import Path

import uvicorn

from examples.ner_backend.app import create_app


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
    uvicorn.run(create_app(args.data_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
