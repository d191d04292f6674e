#!/usr/bin/env python3
"""Randomised synthetic anomaly lab in the NAB layout, for checking generalisation.

The detector is tuned on the NAB development split (smooth synthetic daily
cycles, temperatures, taxi demand, freeway sensors). This script writes a
corpus of *other* kinds of series, drawn from documented generators, in exactly
the NAB layout, so that the detector can be run and scored on it the same way:

    DIR/data/<category>/<name>.csv   header "timestamp,value", timestamps
                                     "YYYY-MM-DD HH:MM:SS", rows in file order
    DIR/labels.json                  same format as NAB's combined_windows.json
    DIR/anomalies.json               ground truth detail (not needed to score):
                                     row, timestamp and kind of every injected
                                     anomaly, and its window rows

usage:
    python3 detector/nab_lab.py --seed N --out DIR

Score a detector on it (from /work/main, one command line):

    python3 detector/nab_lab.py --seed 7 --out /tmp/lab7 && ./target/release/edgewarden-detector nab --data /tmp/lab7/data --out /tmp/lab7-out && python3 ../shared/eval/nab_score.py /tmp/lab7-out --labels /tmp/lab7/labels.json --data /tmp/lab7/data

Add --per-file to the scorer for the per-category and per-file breakdown;
DIR/anomalies.json then tells which kind of anomaly each window holds. A
detector that never fires scores 0; a detector's threshold is optimised on
the corpus, as on NAB. Writing into an existing DIR removes CSV files of an
earlier corpus from DIR/data/lab* so that the detector sees only this one.

Every random choice comes from one random.Random(seed): the same seed gives
byte-identical files, another seed gives another corpus (file count, lengths,
start dates, amplitudes, noise levels, phases, schedules, anomaly kinds,
positions and sizes all change). Standard library only; a corpus takes a few
seconds. Nothing is read from any real data set.

Labels follow NAB's windowing rule. A file of n rows with k anomalies gets
one window per anomaly, centred on the anomaly's first row i:
[i - h, i + h] with h = int(0.10 * n / k) // 2 (so the windows of a file
cover about 10% of its rows), written with the timestamps of those rows as
"YYYY-MM-DD HH:MM:SS.ffffff". Anomalies start after the first 15% of the rows
(NAB's probationary period) with their whole window after it, windows never
overlap, and an anomaly's effect ends before the next anomaly's window starts
(a regime change of the last anomaly may last to the end of the file). Files
without anomaly get []. When a file repeats a timestamp, the scorer maps a
window edge to the first row carrying it.

Categories and generators
-------------------------

labServer   server metrics, 5-minute sampling, 3,000-9,000 rows.
  cpu_*       CPU %: base load + daily cycle (random phase, weaker at the
              weekend) + AR(1) noise, clipped to 0..100, and a nightly backup
              job that drives 1-2 samples to 78-96% at the same time every day.
  mem_*       memory %: daily sawtooth (slow climb, drop at a fixed daily
              service restart) + noise.
  net_*       network bytes per interval: log-normal around a daily cycle
              (weekend dip) with heavy-tailed benign bursts (x2-9, 1-4
              samples, several per day).
  disk_*      disk write bytes: log-normal background + a periodic job every
              1-6 h (1-3 samples, x20-80) + a daily large job.
  req_*       request counts: negative-binomial counts on a daily/weekly rate.
  anomalies:  level shift up or down (cpu, mem, req), sustained CPU
              saturation (97-100% for 2-8 h), change in variance (cpu, net),
              run-away leak (slow ramp up to a ceiling, then a restart: cpu,
              mem, disk), new never-seen extreme value (2.5-6x the file's
              largest benign value: net, disk, req), disk job stuck running
              for hours, periodic disk jobs that stop running.

labPrices   hourly prices/rates (cost per click, cost per mille, rate cards),
            2,000-5,000 rows: log price = level + mean-reverting random walk
            + weekly (weekday/weekend) + daily seasonality + noise, with
            benign 1-3 hour spikes (x1.3-1.9) every few days, 2-4 decimals.
  anomalies:  price collapse / level drop (x0.25-0.5), spike far beyond the
              file's range (1.8-3x its benign maximum) for 2-6 h, frozen feed
              (the same value repeated for 1-3 days), level surge (x1.8-2.5).

labCounts   bursty counts (mentions, hashtags, retweets), 5-minute sampling,
            3,000-10,000 rows (sometimes up to 16,000): negative-binomial
            counts around a daily pattern, plus benign bursts of similar size
            (x5-9 the base rate, exponential decay) 3-7 times a week.
  anomalies:  unprecedented burst (3-5x the largest benign burst, slower
              decay), a cluster of 10-16 medium bursts within 3-6 h (each
              0.5-0.75x a benign burst, so no single sample is extreme), a
              dropout to zero for 3-10 h.

labMixed    awkward sampling and value types; every file has benign gaps
            (1-18 h without rows), duplicated timestamps, and 2-3 files of the
            category have no anomaly at all (every alarm on them is a false
            positive).
  sensor_*    irregularly sampled sensor (jittered 5 or 10 min steps),
              daily cycle + AR(1) noise, quantised to its resolution.
  replicas_*  integer replica count of an autoscaled service: a daily load
              curve turned into steps with hysteresis.
  setpoint_*  flat line with rare, scheduled changes (a maintenance setpoint
              every 2, 3 or 7 days at a fixed hour for 1-4 h).
  queue_*     small integer queue length (mostly 0-3) with benign short
              backlogs a few times a week.
  anomalies:  step change, slow drift, stuck (frozen) sensor, run-away
              scale-up, collapse to 0 replicas, autoscaler stuck, flapping
              setpoint, setpoint at a never-seen level, maintenance setpoint
              held far too long, sustained backlog growth, busier queue
              (level shift), frozen queue gauge.

Benign behaviour deliberately includes what a naive detector alarms on:
daily backup spikes, daily restarts, heavy-tailed and recurring bursts,
periodic jobs, benign price spikes, weekend dips, gaps, duplicated
timestamps and scheduled setpoint changes.

The corpus has 14-20 files and at most 150,000 rows in all.
"""

import argparse
import datetime
import json
import math
import os
import random
import sys

DAY = 86400
WEEK = 7 * DAY
TS_FMT = "%Y-%m-%d %H:%M:%S"
MAX_TOTAL_ROWS = 150000
PROBATION = 0.15
WINDOW_FRACTION = 0.10
TWO_PI = 2.0 * math.pi
CATEGORIES = ("labServer", "labPrices", "labCounts", "labMixed")


# ------------------------------------------------------------ utilities ---

def poisson(rng, lam):
    """Poisson draw (Knuth for small means, rounded normal for large ones)."""
    if lam <= 0.0:
        return 0
    if lam < 12.0:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


def negbin(rng, lam, r):
    """Negative-binomial draw as a gamma-Poisson mixture (mean lam, shape r)."""
    if lam <= 0.0:
        return 0
    return poisson(rng, rng.gammavariate(r, lam / r))


def log_uniform(rng, lo, hi):
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def weighted_sample(rng, weights, k):
    """k distinct keys of the dict weights, drawn with the given weights."""
    pool = dict(weights)
    out = []
    while pool and len(out) < k:
        total = sum(pool.values())
        x = rng.uniform(0.0, total)
        for key in sorted(pool):
            x -= pool[key]
            if x <= 0.0:
                break
        out.append(key)
        del pool[key]
    return out


class Clock(object):
    """Row times (seconds after a start datetime) and calendar helpers."""

    def __init__(self, rng, n, step, irregular=False, gaps=False, dups=False):
        self.n, self.step = n, step
        start = datetime.datetime(rng.randint(2015, 2021), rng.randint(1, 12),
                                  rng.randint(1, 28))
        if step >= 3600:
            start += datetime.timedelta(hours=rng.randrange(24))
        else:
            start += datetime.timedelta(seconds=step * rng.randrange(DAY // step))
        self.start = start
        self.start_sod = start.hour * 3600 + start.minute * 60 + start.second
        self.start_dow = start.weekday()
        gap_rate = 1.0 / rng.uniform(500, 1500) if gaps else 0.0
        dup_rate = rng.uniform(0.002, 0.01) if dups else 0.0
        jitter = rng.uniform(0.15, 0.4) if irregular else 0.0
        times, t = [], 0
        while len(times) < n:
            times.append(t)
            if dup_rate and rng.random() < dup_rate and len(times) < n:
                times.append(t)
            dt = step * math.exp(rng.gauss(0.0, jitter)) if jitter else step
            if gap_rate and rng.random() < gap_rate:
                hours = rng.uniform(1.0, 18.0)
                dt += step * int(hours * 3600 / step)
            t += max(1, int(round(dt)))
        self.t = times[:n]
        self.dup = [i > 0 and self.t[i] == self.t[i - 1] for i in range(n)]

    def day_frac(self, i):
        return ((self.start_sod + self.t[i]) % DAY) / float(DAY)

    def weekday(self, i):
        return (self.start_dow + (self.start_sod + self.t[i]) // DAY) % 7

    def slot(self, i):
        """index of the sampling slot within the day"""
        return ((self.start_sod + self.t[i]) % DAY) // self.step

    def days(self, i):
        """days since the start of the file (float)"""
        return self.t[i] / float(DAY)

    def rows_for(self, seconds):
        return max(1, int(round(seconds / float(self.step))))

    def stamp(self, i):
        return (self.start + datetime.timedelta(seconds=self.t[i])).strftime(TS_FMT)


def daily(clock, i, phase):
    return math.cos(TWO_PI * (clock.day_frac(i) - phase))


def ar1(rng, n, phi, sd, sd_scale=None):
    """AR(1) noise with innovation sd (optionally scaled per row)."""
    out, x = [0.0] * n, 0.0
    norm = math.sqrt(max(1e-9, 1.0 - phi * phi))
    for i in range(n):
        s = sd if sd_scale is None else sd * sd_scale[i]
        x = phi * x + norm * rng.gauss(0.0, s)
        out[i] = x
    return out


class Plan(object):
    """Anomaly rows of one file, NAB windows, and how long effects may last.

    starts[j] is the first row of anomaly j; its window is
    [starts[j] - half, starts[j] + half]; limits[j] is the first row an effect
    of anomaly j must not reach (the next window minus a gap, or n).
    """

    def __init__(self, rng, n, k):
        self.n = n
        self.kinds = []
        self.starts, self.limits, self.half = [], [], 0
        while k > 0:
            half = int(WINDOW_FRACTION * n / k) // 2
            gap = max(24, half // 2)
            lo = int(math.ceil(PROBATION * n)) + half + 1
            hi = n - 1 - half - max(12, half // 4)
            spacing = 2 * half + 1 + gap
            room = hi - lo - (k - 1) * spacing
            if room >= 0:
                offsets = sorted(rng.randint(0, room) for _ in range(k))
                self.starts = [lo + offsets[j] + j * spacing for j in range(k)]
                self.limits = [self.starts[j + 1] - half - gap // 2
                               for j in range(k - 1)] + [n]
                self.half = half
                return
            k -= 1

    def __len__(self):
        return len(self.starts)

    def items(self):
        return list(zip(self.starts, self.limits))

    def windows(self):
        return [(max(0, s - self.half), min(self.n - 1, s + self.half))
                for s in self.starts]

    def regime_end(self, rng, s, limit):
        """end row of a regime change: after the window; may be permanent."""
        if limit >= self.n and rng.random() < 0.5:
            return self.n
        return rng.randint(min(s + self.half + 1, limit), limit)

    def short(self, s, limit, rows):
        return min(s + max(1, rows), limit)


def choose_kinds(rng, plan, weights):
    kinds = weighted_sample(rng, weights, len(plan))
    while len(kinds) < len(plan):
        kinds.append(weighted_sample(rng, weights, 1)[0])
    plan.kinds = kinds
    return kinds


def fmt_float(values, decimals):
    f = "%%.%df" % decimals
    return [f % v for v in values]


def fmt_int(values):
    return ["%d" % int(round(v)) for v in values]


def copy_duplicates(rng, clock, values):
    """A repeated timestamp usually repeats the value too (a re-sent sample)."""
    for i in range(1, clock.n):
        if clock.dup[i] and rng.random() < 0.6:
            values[i] = values[i - 1]


# ------------------------------------------------------------ labServer ---

def raise_above_peak(rng, values, spans, lift, jitter, cast=float):
    """Sets each span of `values` to a level `lift` times the series' peak, jittered by `jitter`."""
    peak = max(values)
    for s, e in spans:
        top = peak * rng.uniform(*lift)
        for i in range(s, e):
            values[i] = cast(top * rng.uniform(*jitter))


def gen_cpu(rng, clock, plan):
    n = clock.n
    base = rng.uniform(8.0, 35.0)
    amp = rng.uniform(3.0, 14.0)
    phase = rng.random()
    weekend = rng.uniform(0.0, 0.6)
    phi, sd = rng.uniform(0.3, 0.8), rng.uniform(1.0, 3.5)
    backup_slot = rng.randrange(DAY // clock.step)
    backup_len = rng.choice((1, 2))
    backup_level = rng.uniform(78.0, 96.0)
    level = [base + amp * (1.0 - weekend * (clock.weekday(i) >= 5))
             * daily(clock, i, phase) for i in range(n)]
    scale = [1.0] * n
    override = {}
    kinds = choose_kinds(rng, plan, {"level_shift": 1.0, "saturation": 1.0,
                                     "variance": 0.8, "leak": 0.8})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "level_shift":
            down = base > 28.0 and rng.random() < 0.5
            delta = -rng.uniform(15.0, base - 6.0) if down else \
                rng.uniform(14.0, min(32.0, 92.0 - base - amp))
            for i in range(s, plan.regime_end(rng, s, limit)):
                level[i] += delta
        elif kind == "saturation":
            top = rng.uniform(97.0, 99.5)
            for i in range(s, plan.short(s, limit, clock.rows_for(rng.uniform(2, 8) * 3600))):
                override[i] = min(100.0, top + rng.gauss(0.0, 0.6))
        elif kind == "variance":
            factor = max(rng.uniform(3.5, 6.0), rng.uniform(9.0, 14.0) / sd)
            for i in range(s, plan.regime_end(rng, s, limit)):
                scale[i] = factor
        elif kind == "leak":
            ceiling = rng.uniform(88.0, 98.0)
            ramp = rng.randint(max(12, plan.half // 2), max(13, plan.half))
            end = plan.regime_end(rng, s, limit)
            if end >= n:
                end = min(n, s + ramp + clock.rows_for(rng.uniform(4, 24) * 3600))
            for i in range(s, end):
                frac = min(1.0, (i - s + 1) / float(ramp))
                level[i] += frac * max(0.0, ceiling - level[i])
    noise = ar1(rng, n, phi, sd, scale)
    values = []
    for i in range(n):
        v = override.get(i, level[i] + noise[i])
        slot = clock.slot(i)
        if backup_slot <= slot < backup_slot + backup_len:
            v = max(v, backup_level + rng.gauss(0.0, 2.0))
        values.append(min(100.0, max(0.0, v)))
    return fmt_float(values, 2)


def gen_mem(rng, clock, plan):
    n = clock.n
    base = rng.uniform(25.0, 50.0)
    climb = rng.uniform(5.0, 15.0)
    restart = rng.random()
    sd = rng.uniform(0.15, 0.6)
    level = [base + climb * ((clock.day_frac(i) - restart) % 1.0) for i in range(n)]
    kinds = choose_kinds(rng, plan, {"leak": 1.5, "level_shift": 1.0})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "leak":
            ceiling = rng.uniform(94.0, 98.5)
            ramp = rng.randint(max(24, plan.half // 2), max(25, plan.half))
            end = plan.regime_end(rng, s, limit)
            if end >= n:
                end = min(n, s + ramp + clock.rows_for(rng.uniform(6, 24) * 3600))
            start_level = level[s]
            for i in range(s, end):
                frac = min(1.0, (i - s + 1) / float(ramp))
                level[i] = start_level + frac * (ceiling - start_level)
        else:
            down = rng.random() < 0.35
            delta = -rng.uniform(10.0, base - 8.0) if down else \
                rng.uniform(15.0, min(30.0, 94.0 - base - climb))
            for i in range(s, plan.regime_end(rng, s, limit)):
                level[i] += delta
    values = [min(100.0, max(0.0, level[i] + rng.gauss(0.0, sd))) for i in range(n)]
    return fmt_float(values, 2)


def gen_net(rng, clock, plan):
    n = clock.n
    mu = math.log(log_uniform(rng, 2e5, 5e7))
    amp = rng.uniform(0.3, 1.0)
    phase = rng.random()
    weekend = rng.uniform(0.0, 0.5)
    phi, sd = rng.uniform(0.2, 0.7), rng.uniform(0.12, 0.35)
    burst_p = rng.uniform(0.004, 0.012)
    loglevel = [mu + amp * daily(clock, i, phase)
                - weekend * (clock.weekday(i) >= 5) for i in range(n)]
    scale = [1.0] * n
    extremes = []
    kinds = choose_kinds(rng, plan, {"extreme": 1.2, "level_shift": 1.0,
                                     "variance": 0.8})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "level_shift":
            delta = math.log(rng.uniform(3.0, 6.0)) if rng.random() < 0.5 else \
                -math.log(rng.uniform(4.0, 10.0))
            for i in range(s, plan.regime_end(rng, s, limit)):
                loglevel[i] += delta
        elif kind == "variance":
            factor = max(3.0, 0.95 / sd)
            for i in range(s, plan.regime_end(rng, s, limit)):
                scale[i] = factor
        else:
            extremes.append((s, plan.short(s, limit, rng.randint(1, 3))))
    noise = ar1(rng, n, phi, sd, scale)
    values, burst_left, burst_mult = [], 0, 1.0
    for i in range(n):
        if burst_left == 0 and rng.random() < burst_p:
            burst_left, burst_mult = rng.randint(1, 4), math.exp(rng.uniform(0.7, 2.2))
        m = 1.0
        if burst_left:
            m, burst_left = burst_mult * rng.uniform(0.7, 1.2), burst_left - 1
        values.append(math.exp(loglevel[i] + noise[i]) * m)
    raise_above_peak(rng, values, extremes, (2.5, 5.0), (0.85, 1.1))
    return fmt_int(values)


def gen_disk(rng, clock, plan):
    n = clock.n
    base = log_uniform(rng, 5e4, 1e6)
    sd = rng.uniform(0.2, 0.4)
    period = clock.rows_for(rng.choice((1, 2, 3, 4, 6)) * 3600)
    offset = rng.randrange(period)
    job_len = rng.randint(1, 3)
    job = base * rng.uniform(20.0, 80.0)
    big_slot = rng.randrange(DAY // clock.step)
    big_len = rng.randint(2, 6)
    big = job * rng.uniform(1.5, 3.0)
    mult = [1.0] * n
    no_jobs = [False] * n
    stuck = {}
    extremes = []
    weights = {"leak": 1.0, "stuck_job": 1.0, "extreme": 1.0}
    if period <= 36:
        weights["missing_jobs"] = 0.8
    kinds = choose_kinds(rng, plan, weights)
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "leak":
            growth = job / base * rng.uniform(1.0, 2.0)
            ramp = rng.randint(max(24, plan.half // 2), max(25, plan.half))
            end = plan.regime_end(rng, s, limit)
            if end >= n:
                end = min(n, s + ramp + clock.rows_for(rng.uniform(6, 24) * 3600))
            for i in range(s, end):
                mult[i] = growth ** min(1.0, (i - s + 1) / float(ramp))
        elif kind == "stuck_job":
            level = job * rng.uniform(0.8, 1.2)
            for i in range(s, plan.short(s, limit, clock.rows_for(rng.uniform(3, 12) * 3600))):
                stuck[i] = level
        elif kind == "missing_jobs":
            end = max(plan.regime_end(rng, s, limit), min(limit, s + 8 * period))
            for i in range(s, end):
                no_jobs[i] = True
        else:
            extremes.append((s, plan.short(s, limit, rng.randint(1, 3))))
    values = []
    for i in range(n):
        v = base * math.exp(rng.gauss(0.0, sd)) * mult[i]
        slot = clock.slot(i)
        if not no_jobs[i] and (slot - offset) % period < job_len:
            v += job * rng.uniform(0.85, 1.15)
        if big_slot <= slot < big_slot + big_len:
            v += big * rng.uniform(0.9, 1.1)
        if i in stuck:
            v += stuck[i] * rng.uniform(0.9, 1.1)
        values.append(v)
    raise_above_peak(rng, values, extremes, (2.5, 5.0), (0.9, 1.1))
    return fmt_int(values)


def gen_req(rng, clock, plan):
    n = clock.n
    base = log_uniform(rng, 20.0, 400.0)
    amp = rng.uniform(0.3, 0.8)
    phase = rng.random()
    weekend = rng.uniform(0.5, 0.95)
    shape = rng.uniform(15.0, 60.0)
    rate = [base * (1.0 + amp * daily(clock, i, phase))
            * (weekend if clock.weekday(i) >= 5 else 1.0) for i in range(n)]
    extremes = []
    kinds = choose_kinds(rng, plan, {"level_drop": 1.0, "level_up": 0.7,
                                     "extreme": 1.0})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "level_drop":
            f = rng.uniform(0.12, 0.4)
        elif kind == "level_up":
            f = rng.uniform(2.2, 3.5)
        else:
            extremes.append((s, plan.short(s, limit, rng.randint(1, 6))))
            continue
        for i in range(s, plan.regime_end(rng, s, limit)):
            rate[i] *= f
    values = [negbin(rng, rate[i], shape) for i in range(n)]
    raise_above_peak(rng, values, extremes, (3.0, 5.0), (0.85, 1.1), cast=int)
    return fmt_int(values)


# ------------------------------------------------------------ labPrices ---

def gen_price(rng, clock, plan, decimals):
    n = clock.n
    p0 = log_uniform(rng, 0.15, 4.0)
    phi, rw_sd = rng.uniform(0.995, 0.9995), rng.uniform(0.003, 0.012)
    weekly = rng.uniform(0.05, 0.2) * rng.choice((-1.0, 1.0))
    amp, phase = rng.uniform(0.05, 0.25), rng.random()
    sd = rng.uniform(0.015, 0.05)
    spike_p = 1.0 / rng.uniform(80.0, 250.0)
    logp, walk = [], 0.0
    for i in range(n):
        walk = phi * walk + rng.gauss(0.0, rw_sd)
        logp.append(math.log(p0) + walk + amp * daily(clock, i, phase)
                    + weekly * (clock.weekday(i) >= 5) + rng.gauss(0.0, sd))
    left = 0
    for i in range(n):
        if left == 0 and rng.random() < spike_p:
            left, m = rng.randint(1, 3), math.log(rng.uniform(1.3, 1.9))
        if left:
            logp[i] += m * rng.uniform(0.85, 1.1)
            left -= 1
    spikes, frozen = [], []
    kinds = choose_kinds(rng, plan, {"collapse": 1.3, "spike": 1.3,
                                     "frozen": 0.7, "surge": 0.6})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind in ("collapse", "surge"):
            f = rng.uniform(0.25, 0.5) if kind == "collapse" else rng.uniform(1.8, 2.5)
            for i in range(s, plan.regime_end(rng, s, limit)):
                logp[i] += math.log(f)
        elif kind == "spike":
            spikes.append((s, plan.short(s, limit, rng.randint(2, 6))))
        else:
            frozen.append((s, plan.short(s, limit, rng.randint(24, 72))))
    values = [math.exp(x) for x in logp]
    raise_above_peak(rng, values, spikes, (1.8, 3.0), (0.93, 1.07))
    for s, e in frozen:
        for i in range(s, e):
            values[i] = values[s - 1]
    return fmt_float(values, decimals)


# ------------------------------------------------------------ labCounts ---

def gen_counts(rng, clock, plan):
    n = clock.n
    base = log_uniform(rng, 4.0, 60.0)
    amp = min(rng.uniform(0.3, 0.75), 1.0 - 3.0 / base) if base > 4.3 else 0.2
    phase = rng.random()
    weekend = rng.uniform(0.7, 1.25)
    shape = rng.uniform(6.0, 25.0)
    rate = [base * (1.0 + amp * daily(clock, i, phase))
            * (weekend if clock.weekday(i) >= 5 else 1.0) for i in range(n)]
    extra = [0.0] * n
    per_row = rng.uniform(3.0, 7.0) / (WEEK / clock.step)
    peak = base * rng.uniform(5.0, 9.0)
    tau = rng.uniform(2.0, 8.0)
    biggest = 0.0
    for i in range(n):
        if rng.random() < per_row:
            pk, t = peak * rng.uniform(0.8, 1.2), tau * rng.uniform(0.7, 1.3)
            biggest = max(biggest, pk)
            for j in range(min(n - i, int(5 * t) + 1)):
                extra[i + j] += pk * math.exp(-j / t)
    biggest = max(biggest, peak * 1.2)
    zero = [False] * n
    kinds = choose_kinds(rng, plan, {"mega_burst": 1.0, "burst_cluster": 1.0,
                                     "dropout": 1.0})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "mega_burst":
            pk, t = biggest * rng.uniform(3.0, 5.0), tau * rng.uniform(1.5, 3.0)
            for i in range(s, plan.short(s, limit, int(6 * t) + 1)):
                extra[i] += pk * math.exp(-(i - s) / t)
        elif kind == "burst_cluster":
            end = plan.short(s, limit, clock.rows_for(rng.uniform(3, 6) * 3600))
            cluster = [0.0] * (end - s)
            count = rng.randint(10, 16)
            spacing = (end - s) / float(count)
            starts = [int(j * spacing + rng.uniform(0.0, 0.6) * spacing)
                      for j in range(count)]
            for b in starts:
                pk, t = peak * rng.uniform(0.5, 0.75), rng.uniform(1.5, 3.5)
                for j in range(b, end - s):
                    cluster[j] = max(cluster[j], pk * math.exp(-(j - b) / t))
            for i in range(s, end):
                extra[i] += cluster[i - s]
        else:
            for i in range(s, plan.short(s, limit, clock.rows_for(rng.uniform(3, 10) * 3600))):
                zero[i] = True
    values = [0 if zero[i] else negbin(rng, rate[i] + extra[i], shape)
              for i in range(n)]
    return fmt_int(values)


# ------------------------------------------------------------- labMixed ---

def gen_sensor(rng, clock, plan):
    n = clock.n
    level = rng.uniform(20.0, 80.0)
    amp, phase = rng.uniform(1.0, 5.0), rng.random()
    phi, sd = rng.uniform(0.85, 0.95), rng.uniform(0.3, 1.5)
    resolution = rng.choice((0.1, 0.5, 1.0))
    decimals = 1
    base = [level + amp * daily(clock, i, phase) for i in range(n)]
    noise = ar1(rng, n, phi, sd)
    frozen = []
    kinds = choose_kinds(rng, plan, {"step": 1.0, "drift": 1.0, "stuck": 0.8})
    for (s, limit), kind in zip(plan.items(), kinds):
        size = max(rng.uniform(5.0, 9.0) * sd, rng.uniform(1.5, 2.5) * amp) \
            * rng.choice((-1.0, 1.0))
        if kind == "step":
            for i in range(s, plan.regime_end(rng, s, limit)):
                base[i] += size
        elif kind == "drift":
            ramp = rng.randint(max(12, plan.half // 2), max(13, plan.half))
            for i in range(s, plan.regime_end(rng, s, limit)):
                base[i] += size * min(1.0, (i - s + 1) / float(ramp))
        else:
            frozen.append((s, plan.short(s, limit, clock.rows_for(rng.uniform(6, 24) * 3600))))
    values = [round((base[i] + noise[i]) / resolution) * resolution for i in range(n)]
    for s, e in frozen:
        for i in range(s, e):
            values[i] = values[s - 1]
    copy_duplicates(rng, clock, values)
    return fmt_float(values, decimals)


def gen_replicas(rng, clock, plan):
    n = clock.n
    lo = rng.randint(1, 3)
    hi = lo + rng.uniform(2.0, 6.0)
    phase = rng.random()
    load = [lo + (hi - lo) * (0.5 + 0.5 * daily(clock, i, phase))
            + rng.gauss(0.0, 0.35) for i in range(n)]
    values, current, pending = [], lo, 0
    for i in range(n):
        want = max(lo, int(math.ceil(load[i])))
        if want != current:
            pending += 1
            if pending >= (2 if want > current else 6):
                current += 1 if want > current else -1
                pending = 0
        else:
            pending = 0
        values.append(current)
    normal_max = max(values)
    kinds = choose_kinds(rng, plan, {"runaway": 1.0, "collapse": 1.0, "stuck": 0.6})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "runaway":
            cap = int(math.ceil(normal_max * rng.uniform(2.0, 3.0))) + 2
            v = values[s]
            for i in range(s, plan.regime_end(rng, s, limit)):
                if v < cap and rng.random() < 0.5:
                    v += rng.randint(1, 2)
                values[i] = min(cap, v)
        elif kind == "collapse":
            for i in range(s, plan.short(s, limit, clock.rows_for(rng.uniform(1, 6) * 3600))):
                values[i] = 0
        else:
            v = values[s]
            end = plan.short(s, limit, clock.rows_for(rng.uniform(24, 48) * 3600))
            for i in range(s, end):
                values[i] = v
    copy_duplicates(rng, clock, values)
    return fmt_int(values)


def gen_setpoint(rng, clock, plan):
    n = clock.n
    v0 = round(rng.uniform(10.0, 100.0), 1)
    v1 = round(v0 + rng.choice((-1.0, 1.0)) * rng.uniform(0.05, 0.3) * v0, 1)
    every = rng.choice((2, 3, 7))
    at = rng.uniform(0.0, 24.0 - 4.0)
    hours = rng.randint(1, 4)
    anchor = rng.randrange(every)
    values = []
    for i in range(n):
        day = int(clock.days(i) + clock.start_sod / float(DAY))
        hour = clock.day_frac(i) * 24.0
        scheduled = (day - anchor) % every == 0 and at <= hour < at + hours
        values.append(v1 if scheduled else v0)
    kinds = choose_kinds(rng, plan, {"flapping": 1.0, "new_level": 1.0,
                                     "long_change": 0.7})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "flapping":
            end = plan.short(s, limit, clock.rows_for(rng.uniform(2, 6) * 3600))
            state, i = True, s
            while i < end:
                for _ in range(rng.randint(1, 3)):
                    if i < end:
                        values[i] = v1 if state else v0
                        i += 1
                state = not state
        elif kind == "new_level":
            v2 = round(v0 + rng.choice((-1.0, 1.0)) * rng.uniform(2.0, 4.0)
                       * max(abs(v1 - v0), 0.05 * v0), 1)
            end = max(plan.regime_end(rng, s, limit),
                      plan.short(s, limit, clock.rows_for(6 * 3600)))
            for i in range(s, end):
                values[i] = v2
        else:
            end = plan.short(s, limit, clock.rows_for(rng.uniform(12, 36) * 3600))
            for i in range(s, end):
                values[i] = v1
    return fmt_float(values, 1)


def gen_queue(rng, clock, plan):
    n = clock.n
    lam0 = rng.uniform(0.3, 2.5)
    amp, phase = rng.uniform(0.2, 0.8), rng.random()
    rate = [lam0 * (1.0 + amp * daily(clock, i, phase)) for i in range(n)]
    backlog = [0.0] * n
    per_row = rng.uniform(3.0, 8.0) / (WEEK / clock.step)
    benign_peak = 0.0
    for i in range(n):
        if rng.random() < per_row:
            pk = rng.uniform(6.0, 14.0)
            benign_peak = max(benign_peak, pk)
            up, down = rng.randint(1, 3), rng.randint(3, 12)
            for j in range(min(n - i, up + down)):
                v = pk * (j + 1) / up if j < up else pk * (1.0 - (j - up + 1) / float(down + 1))
                backlog[i + j] = max(backlog[i + j], v)
    benign_peak = max(benign_peak, 14.0)
    fixed = {}
    kinds = choose_kinds(rng, plan, {"backlog": 1.2, "level_shift": 1.0,
                                     "stall": 0.7})
    for (s, limit), kind in zip(plan.items(), kinds):
        if kind == "backlog":
            top = benign_peak * rng.uniform(4.0, 7.0)
            up = clock.rows_for(rng.uniform(2, 8) * 3600)
            down = clock.rows_for(rng.uniform(1, 3) * 3600)
            for i in range(s, plan.short(s, limit, up + down)):
                j = i - s
                v = top * (j + 1) / up if j < up else top * (1.0 - (j - up + 1) / float(down + 1))
                backlog[i] = max(backlog[i], v)
        elif kind == "level_shift":
            f = rng.uniform(5.0, 10.0)
            for i in range(s, plan.regime_end(rng, s, limit)):
                rate[i] *= f
        else:
            v = rng.randint(5, 12)
            for i in range(s, plan.short(s, limit, clock.rows_for(rng.uniform(3, 12) * 3600))):
                fixed[i] = v
    values = [fixed.get(i, poisson(rng, rate[i]) + int(round(backlog[i])))
              for i in range(n)]
    copy_duplicates(rng, clock, values)
    return fmt_int(values)


# --------------------------------------------------------------- corpus ---

SERVER_HOSTS = ("web", "db", "cache", "api", "batch", "edge", "auth", "queue")
NAME_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "do",
                  "fa", "gu", "hi", "jo", "pe", "sa")


def word(rng, syllables=3):
    return "".join(rng.choice(NAME_SYLLABLES) for _ in range(syllables))


def server_name(rng, prefix):
    return "%s_%s%02d" % (prefix, rng.choice(SERVER_HOSTS), rng.randint(1, 40))


def anomaly_count(rng, n):
    k = weighted_sample(rng, {1: 0.4, 2: 0.4, 3: 0.2}, 1)[0]
    return min(k, 2) if n < 3000 else k


def build_plan(rng):
    """List of file specs: category, name, generator, rows, step, clock kind, k."""
    specs = []

    server_kinds = ["cpu", "mem", "net", "disk", "req"]
    rng.shuffle(server_kinds)
    n_server = rng.randint(4, 5)
    for kind in server_kinds[:n_server]:
        n = rng.randint(3000, 9000)
        gen = {"cpu": gen_cpu, "mem": gen_mem, "net": gen_net, "disk": gen_disk,
               "req": gen_req}[kind]
        specs.append(["labServer", server_name(rng, kind), gen, n, 300,
                      "regular", anomaly_count(rng, n)])

    for _ in range(rng.randint(3, 4)):
        kind = rng.choice(("cpc_campaign", "cpm_site", "rate_card"))
        decimals = {"cpc_campaign": 4, "cpm_site": 3, "rate_card": 2}[kind]
        n = rng.randint(2000, 5000)
        gen = (lambda d: lambda r, c, p: gen_price(r, c, p, d))(decimals)
        specs.append(["labPrices", "%s_%s" % (kind, word(rng, 2) + str(rng.randint(10, 99))),
                      gen, n, 3600, "regular", anomaly_count(rng, n)])

    for _ in range(rng.randint(3, 5)):
        kind = rng.choice(("mentions", "hashtag", "retweets"))
        n = rng.randint(3000, 16000) if rng.random() < 0.2 else rng.randint(3000, 10000)
        specs.append(["labCounts", "%s_%s" % (kind, word(rng)), gen_counts, n, 300,
                      "regular", anomaly_count(rng, n)])

    mixed = ["sensor", "replicas", "setpoint", "queue"]
    rng.shuffle(mixed)
    n_mixed = rng.randint(4, 6)
    while len(mixed) < n_mixed:
        mixed.append(rng.choice(("sensor", "replicas", "setpoint", "queue")))
    benign = set(rng.sample(range(n_mixed), 3 if n_mixed >= 6 else 2))
    for j, kind in enumerate(mixed):
        n = rng.randint(2000, 6000)
        gen, step, clock = {
            "sensor": (gen_sensor, rng.choice((300, 600)), "irregular"),
            "replicas": (gen_replicas, 300, "gappy"),
            "setpoint": (gen_setpoint, 600, "gappy"),
            "queue": (gen_queue, 300, "gappy"),
        }[kind]
        k = 0 if j in benign else anomaly_count(rng, n)
        specs.append(["labMixed", "%s_%s" % (kind, word(rng, 2) + str(rng.randint(1, 9))),
                      gen, n, step, clock, k])

    total = sum(s[3] for s in specs)
    if total > MAX_TOTAL_ROWS:
        for s in specs:
            s[3] = max(2000, int(s[3] * MAX_TOTAL_ROWS / float(total)) - 1)
    names = set()
    for s in specs:
        while (s[0], s[1]) in names:
            s[1] += "b"
        names.add((s[0], s[1]))
    return specs


def generate(seed):
    """Build the corpus in memory: {key: (clock, values, plan)}."""
    rng = random.Random(seed)
    corpus = {}
    for category, name, gen, n, step, clock_kind, k in build_plan(rng):
        clock = Clock(rng, n, step,
                      irregular=clock_kind == "irregular",
                      gaps=clock_kind in ("irregular", "gappy"),
                      dups=clock_kind in ("irregular", "gappy"))
        plan = Plan(rng, n, k)
        values = gen(rng, clock, plan)
        corpus["%s/%s.csv" % (category, name)] = (clock, values, plan)
    return corpus


def write(corpus, out):
    data_dir = os.path.join(out, "data")
    for category in CATEGORIES:
        folder = os.path.join(data_dir, category)
        os.makedirs(folder, exist_ok=True)
        for old in sorted(os.listdir(folder)):  # files of an earlier corpus
            if old.endswith(".csv") and "%s/%s" % (category, old) not in corpus:
                os.remove(os.path.join(folder, old))
    labels, truth = {}, {}
    for key in sorted(corpus):
        clock, values, plan = corpus[key]
        stamps = [clock.stamp(i) for i in range(clock.n)]
        with open(os.path.join(data_dir, key), "w", newline="") as fh:
            fh.write("timestamp,value\n")
            fh.write("".join("%s,%s\n" % row for row in zip(stamps, values)))
        windows = plan.windows()
        labels[key] = [[stamps[a] + ".000000", stamps[b] + ".000000"]
                       for a, b in windows]
        truth[key] = {"rows": clock.n, "anomalies": [
            {"row": s, "timestamp": stamps[s], "kind": kind,
             "window_rows": [a, b]}
            for s, kind, (a, b) in zip(plan.starts, plan.kinds, windows)]}
    with open(os.path.join(out, "labels.json"), "w") as fh:
        json.dump(labels, fh, indent=4, sort_keys=True)
        fh.write("\n")
    with open(os.path.join(out, "anomalies.json"), "w") as fh:
        json.dump(truth, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return truth


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Write a randomised synthetic anomaly corpus in the NAB "
                    "layout (DIR/data/<category>/<name>.csv, DIR/labels.json).")
    p.add_argument("--seed", type=int, required=True, help="random seed")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    args = p.parse_args(argv)
    truth = write(generate(args.seed), args.out)
    rows = sum(t["rows"] for t in truth.values())
    windows = sum(len(t["anomalies"]) for t in truth.values())
    if not args.quiet:
        for key in sorted(truth):
            t = truth[key]
            print("%-42s %6d rows  %s" % (key, t["rows"], ", ".join(
                "%s@%d" % (a["kind"], a["row"]) for a in t["anomalies"]) or "-"))
    print("nab_lab seed=%d files=%d rows=%d windows=%d out=%s"
          % (args.seed, len(truth), rows, windows, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
