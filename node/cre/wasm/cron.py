"""The 6-field cron schedules CRE's cron trigger takes (`sec min hour day-of-month month
day-of-week`, as `*/30 * * * * *`), and the next time one fires.

Ours, small on purpose: numbers, `*`, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, and
month/weekday names. A 5-field schedule gets second 0 (as CRE accepts). Day-of-month and
day-of-week follow cron's rule: when both are restricted, either matching is enough. Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 6))
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}


class CronError(ValueError):
    """The schedule is not a cron expression this node understands (the message names the part)."""


def _number(text: str, index: int) -> int:
    names = _MONTHS if index == 4 else _DAYS if index == 5 else {}
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise CronError(f"{_FIELDS[index][0]}: {text!r} is not a number")
    value = int(text)
    if index == 5 and value == 7:
        return 0
    return value


def _field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _number(a, index), _number(b, index)
        else:
            start = _number(base, index)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise CronError(f"{name}: {part!r} is outside {low}-{high}")
        out.update(range(start, end + 1, step))
    return frozenset(out)


class Cron:
    def __init__(self, schedule: str) -> None:
        parts = schedule.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise CronError(f"{schedule!r}: expected 6 fields (sec min hour day month weekday)")
        self.schedule = schedule
        self.fields = [_field(p, i) for i, p in enumerate(parts)]
        self._dom_any = parts[3] in ("*", "?")
        self._dow_any = parts[5] in ("*", "?")

    def _day_ok(self, t: datetime) -> bool:
        dom = t.day in self.fields[3]
        dow = (t.isoweekday() % 7) in self.fields[5]
        if self._dom_any or self._dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first firing time strictly after `after` (UTC)."""
        t = after.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        seconds, minutes, hours, _, months, _ = self.fields
        horizon = t + timedelta(days=366 * 5)  # leap days recur every 4 years: later means never
        while t < horizon:
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            later = [s for s in seconds if s >= t.second]
            if later:
                return t.replace(second=later[0])
            t = t.replace(second=0) + timedelta(minutes=1)
        raise CronError(f"{self.schedule!r} never fires")
