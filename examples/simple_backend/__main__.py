"""``python -m examples.simple_backend --host 127.0.0.1 --port 9090``."""

import argparse

import uvicorn

from examples.simple_backend.app import app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the simple example ML backend.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
