"""Six-field cron expressions, seconds first (`sec min hour day-of-month month day-of-week`),
as the seed's `"0 0 * * * *"` (every hour on the hour). Fields accept `*`, numbers, ranges
`a-b`, lists `a,b`, steps `*/n` and `a-b/n`; day-of-week 0-7 (0 and 7 are Sunday). When both
day fields are restricted, a time matches either (as in classic cron). Times are UTC."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from itertools import pairwise

_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("weekday", 0, 7))


class CronError(ValueError):
    pass


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                raise CronError(f"{name}: bad range {part!r}")
            start, end = int(a), int(b)
        elif part.isdigit():
            start = end = int(part)
            if step != 1:
                end = high
        else:
            raise CronError(f"{name}: bad value {part!r}")
        if start < low or end > high or start > end:
            raise CronError(f"{name}: {part!r} outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    second: frozenset[int]
    minute: frozenset[int]
    hour: frozenset[int]
    day: frozenset[int]
    month: frozenset[int]
    weekday: frozenset[int]
    day_any: bool
    weekday_any: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 6:
            raise CronError(f"expected 6 fields (seconds first), got {len(parts)}: {text!r}")
        fields = {name: _parse_field(p, name, low, high) for p, (name, low, high) in zip(parts, _FIELDS, strict=True)}
        weekday = frozenset(0 if d == 7 else d for d in fields["weekday"])
        return cls(fields["second"], fields["minute"], fields["hour"], fields["day"], fields["month"], weekday,
                   parts[3] == "*", parts[5] == "*")

    def _day_ok(self, year: int, month: int, day: int) -> bool:
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # cron: 0 = Sunday
        in_day, in_week = day in self.day, weekday in self.weekday
        if self.day_any or self.weekday_any:
            return in_day and in_week
        return in_day or in_week

    def _date_ok(self, year: int, month: int, day: int) -> bool:
        return month in self.month and self._day_ok(year, month, day)

    def next_after(self, ts: int, days: int = 366 * 5) -> int:
        """The first matching second strictly after `ts` (Unix seconds, UTC), looking at most
        `days` days ahead (CronError beyond)."""
        t = ts + 1
        for _ in range(days):
            year, month, day, hour, minute, second = _split(t)
            if month not in self.month or not self._day_ok(year, month, day):
                t = _join(year, month, day) + 86400
                continue
            day_start = _join(year, month, day)
            for h in sorted(x for x in self.hour if x >= hour):
                for m in sorted(x for x in self.minute if (h > hour or x >= minute)):
                    for s in sorted(self.second):
                        candidate = day_start + h * 3600 + m * 60 + s
                        if candidate >= t:
                            return candidate
            t = day_start + 86400
        raise CronError(f"no matching time within {days} days")

    def fires_within(self, ts: int, days: int = 366) -> bool:
        """Whether some time after `ts` matches within `days` days (`0 0 0 30 2 *` never does)."""
        try:
            self.next_after(ts, days)
        except CronError:
            return False
        return True

    def shortest_gap(self, ts: int, days: int = 366 * 2) -> int:
        """The shortest time in seconds between two consecutive ticks, over the days matching in
        the `days` after `ts` (a cron with one tick in that span: `days` * 86400). A day's ticks
        are hours x minutes x seconds, so consecutive ticks in a day are at most three kinds apart
        (next second, next minute, next hour); across days, the last tick of one matching day and
        the first of the next."""
        seconds, minutes, hours = sorted(self.second), sorted(self.minute), sorted(self.hour)
        day_start = _join(*_split(ts)[:3])
        matching = [d for d in range(days + 1) if self._date_ok(*_split(day_start + d * 86400)[:3])]
        gaps = [days * 86400]
        gaps += [b - a for a, b in pairwise(seconds)]
        span_s = seconds[-1] - seconds[0]
        gaps += [(b - a) * 60 - span_s for a, b in pairwise(minutes)]
        span_ms = (minutes[-1] * 60 + seconds[-1]) - (minutes[0] * 60 + seconds[0])
        gaps += [(b - a) * 3600 - span_ms for a, b in pairwise(hours)]
        span_day = (hours[-1] * 3600 + minutes[-1] * 60 + seconds[-1]) - (hours[0] * 3600 + minutes[0] * 60 + seconds[0])
        gaps += [(b - a) * 86400 - span_day for a, b in pairwise(matching)]
        return min(gaps)

    def last_at_or_before(self, ts: int, since: int) -> int | None:
        """The latest matching second in (since, ts], or None."""
        found = None
        t = since
        while True:
            nxt = self.next_after(t)
            if nxt > ts:
                return found
            found, t = nxt, nxt


def _split(ts: int) -> tuple[int, int, int, int, int, int]:
    import time

    g = time.gmtime(ts)
    return g.tm_year, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec


def _join(year: int, month: int, day: int) -> int:
    return calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
