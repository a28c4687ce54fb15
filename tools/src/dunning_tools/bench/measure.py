"""What the benches send and how they count CPU: the invoice every bench posts, a process's CPU
seconds from /proc, and the CPU of a PostgreSQL server the bench started."""

import os
from datetime import date, timedelta
from pathlib import Path


def invoice(run: str, i: int, currency: str = "EUR", amount: str = "100.00", *, prefix: str = "B") -> dict:
    """The invoice `make bench` posts: due in 30 days; 500 customers a run, so customers repeat."""
    return {
        "external_id": f"{prefix}-{run}-{i}",
        "number": f"{prefix}-{run}-{i}",
        "currency": currency,
        "amount_due": amount,
        "issue_date": date.today().isoformat(),
        "due_date": (date.today() + timedelta(days=30)).isoformat(),
        "customer": {
            "external_id": f"C-{run}-{i % 500}",
            "name": f"Customer {i % 500}",
            "email": f"ap-{run}-{i % 500}@example.com",
            "locale": "en-GB",
            "timezone": "Europe/London",
        },
    }


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sys_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of one process so far."""
    return int(_stat(pid)[12]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(data_dir: str | Path | None) -> float:
    """CPU seconds of the PostgreSQL server running on `data_dir` (postmaster and backends); 0 without one."""
    if not data_dir:
        return 0.0
    import psutil

    needle, total = str(data_dir), 0.0
    for proc in psutil.process_iter(["cmdline"]):
        if needle in " ".join(proc.info["cmdline"] or []):
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
    return total
