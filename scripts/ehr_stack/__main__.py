"""``python -m ehr_stack up|down|run|status|token|load-samples`` (the Makefile's targets call these)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from .loader import load_samples
from .reconcile import reconcile
from .stack import Stack, StackConfig
from .tokens import mint_dev_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehr_stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack in the background and load the samples")
    sub.add_parser("down", help="stop the stack; leaves no process behind")
    sub.add_parser("run", help="run the stack in the foreground; Ctrl-C stops it")
    sub.add_parser("status", help="say whether the stack is up")
    token = sub.add_parser("token", help="print a development JWT")
    token.add_argument("--role", default="ehr-service")
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--ttl", type=int, default=12 * 3600)
    sub.add_parser("load-samples", help="(re)load the sample studies and orders into a running stack")
    sub.add_parser("reconcile", help="the paged repair: every study Orthanc holds against what the plugin recorded")
    args = parser.parse_args(argv)
    stack = Stack(StackConfig.from_environment())

    if args.command == "up":
        stack.start()
        print_urls(stack, load_samples(stack, print))
    elif args.command == "down":
        stack.stop()
        print("stack stopped")
    elif args.command == "status":
        up = stack.orthanc_pid() is not None and stack.healthy()
        print(f"stack is {'up' if up else 'down'} ({stack.url})")
        return 0 if up else 1
    elif args.command == "token":
        print(mint_dev_token(stack, role=args.role, subject=args.sub, ttl_seconds=args.ttl))
    elif args.command == "load-samples":
        load_samples(stack, print)
    elif args.command == "reconcile":
        found = reconcile(stack)
        print(f"read {found['studies_in_orthanc']} studies in {found['pages']} pages: {found['queued_for_ingest']}"
              f" not yet recorded (queued for ingest), {found['queued_as_deleted']} recorded studies gone (audited)")
    elif args.command == "run":
        return run_foreground(stack)
    return 0


def run_foreground(stack: Stack) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        proc = stack.start(foreground_output=sys.stdout)
        if proc is None:
            print("the stack is already running in the background (make down to stop it)")
            return 1
        print_urls(stack, load_samples(stack, print))
        print("Ctrl-C stops Orthanc and PostgreSQL.")
        while not stopping and proc.poll() is None:
            time.sleep(0.2)
        return 0 if stopping else (proc.returncode or 1)
    finally:
        stack.stop()
        print("stack stopped")


def print_urls(stack: Stack, manifest: dict[str, Any]) -> None:
    env = stack.env_values()
    print()
    print(f"Orthanc Explorer (admin):  {env['EXPLORER_URL']}")
    print(f"  user {env['ADMIN_USER']}, password in {Path(stack.config.var_dir) / 'stack.env'}")
    print(f"API base URL:              {env['API_BASE_URL']}")
    print(f"DICOM:                     {env['DICOM_AET']}@{env['DICOM_HOST']}:{env['DICOM_PORT']}"
          f" (accepts C-STORE from AET {env['MODALITY_AET']} on 127.0.0.1)")
    print(f"Settings for scripts:      {Path(stack.config.var_dir) / 'stack.env'}")
    if "TLS_CA_FILE" in env:
        print(f"HTTPS only; trust the CA:  {env['TLS_CA_FILE']}"
              + (f" (plain HTTP {env['HTTP_REDIRECT_URL']} only redirects)" if "HTTP_REDIRECT_URL" in env else ""))
    token = mint_dev_token(stack, role="ehr-service", subject="dev-ehr", ttl_seconds=12 * 3600)
    print("Development token (role ehr-service, 12 h):")
    print(f"  {token}")
    print(f"Viewer (OHIF, 1 h):        {sample_viewer_url(stack, manifest, token)}")


def sample_viewer_url(stack: Stack, manifest: dict[str, Any], token: str) -> str:
    """A viewer URL for the MR sample, as the EHR would get it."""
    study = next((s for s in manifest["studies"] if s["modality"] == "MR"), manifest["studies"][0])
    answer = requests.get(f"{stack.url}/api/v1/dicom/viewer-url/{study['study_instance_uid']}",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=stack.verify)
    if answer.status_code != 200:
        return f"(not available: {answer.status_code} {answer.text[:200]})"
    return str(answer.json()["url"])


if __name__ == "__main__":
    sys.exit(main())
