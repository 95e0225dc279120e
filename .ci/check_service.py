"""Wait for a freshly started service to be ready, then ask it one prediction (stdlib only).

    python3 .ci/check_service.py BASE_URL PID

Exits non-zero, saying why, when the process dies, /ready stays 503 for 180 s, or /predict does
not answer 200 with a finite number.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request

QUESTION = {
    "question": "What is the future value of $1,000 at 5% for 3 years?",
    "tables": [],
    "topic": "Quantitative Analysis & Valuation",
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main(base: str, pid: int) -> int:
    started = time.monotonic()
    status, body = 0, ""
    while time.monotonic() - started < 180:
        if not alive(pid):
            print("the service exited before it was ready", file=sys.stderr)
            return 1
        try:
            status, body = get(f"{base}/ready")
        except OSError:
            status = 0
        if status == 200:
            break
        time.sleep(0.2)
    else:
        print(f"/ready still {status} after 180 s: {body[:500]}", file=sys.stderr)
        return 1
    print(f"/ready 200 after {time.monotonic() - started:.1f}s: {body[:300]}")
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps(QUESTION).encode(),
        headers={"content-type": "application/json"},
    )
    sent = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
        status = response.status
    prediction = answer.get("prediction")
    print(f"/predict {status} in {1000 * (time.perf_counter() - sent):.0f} ms: {prediction}")
    if status != 200 or not isinstance(prediction, int | float) or not math.isfinite(prediction):
        print(f"/predict gave no finite prediction: {answer}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
