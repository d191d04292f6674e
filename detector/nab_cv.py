#!/usr/bin/env python3
"""Cross-category protocol for the detector on the NAB development split.

The detector runs once over every series with one parameter set (the defaults, or
--params). Then, for each of the three category groups (artificial, realKnownCause,
realTraffic), the threshold is chosen on the other two groups and the held-out group
is scored at that threshold: the detector is judged on kinds of series its threshold
was not fitted to. It prints, per held-out group and profile, the out-of-category
score, their mean, the in-sample score (threshold optimised on all 25 files) and the
standard score with the detector's own threshold set to 0.8x, 1.0x and 1.2x its value and
the outputs read at that threshold (flatness: a detector whose score collapses away from
its best threshold will not hold on new data).

usage: nab_cv.py --bin BIN --data DIR --scorer nab_score.py [--params FILE]
                 [--out DIR] [--lab DIR]... [--floor-cv X] [--floor-flat X] [--floor-dev X]
                 [--floor-lab X]

A --lab corpus (nab_lab.py: synthetic series of other kinds, with their own labels) is
run with the same parameters and scored at the thresholds fixed on the 25 development
files: the closest offline stand-in for series the detector has never seen.

The last line is machine-readable:
  NABCV cv_standard=.. cv_low_fp=.. cv_low_fn=.. dev_standard=.. flat_min=.. flat_0.8=.. flat_1.2=..
With floors given, exits 1 naming every floor that is not reached.
Standard library only.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile

GROUPS = {
    "artificial": ["artificialNoAnomaly", "artificialWithAnomaly"],
    "realKnownCause": ["realKnownCause"],
    "realTraffic": ["realTraffic"],
}
PROFILES = ["standard", "low_fp", "low_fn"]
LONG = {"standard": "standard", "low_fp": "reward_low_FP_rate",
        "low_fn": "reward_low_FN_rate"}


def run_detector(args, data, out, params=None):
    cmd = [args.bin, "nab", "--data", data, "--out", out]
    params = params or args.params
    if params:
        cmd += ["--params", params]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit("detector failed: %s" % res.stderr.strip())
    return res.stderr.strip()


def default_threshold(args):
    """The detector's default threshold, from its parameter dump."""
    res = subprocess.run([args.bin, "params"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit("detector failed: %s" % res.stderr.strip())
    return json.loads(res.stdout)["threshold"]


def scorer(args, out, *extra):
    cmd = [sys.executable, args.scorer, out, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit("scorer failed (%s): %s" % (" ".join(cmd), res.stderr.strip()))
    last = res.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.na]+)", last)
            if k in PROFILES}


def fold(args, out, tmp, name):
    cats = GROUPS[name]
    th = os.path.join(tmp, "th-%s.json" % name)
    excl = [a for c in cats for a in ("--exclude", c)]
    incl = [a for c in cats for a in ("--include", c)]
    train = scorer(args, out, *excl, "--save-thresholds", th)
    test = scorer(args, out, *incl, "--thresholds-json", th)
    with open(th) as fh:
        thresholds = json.load(fh)
    return name, train, test, thresholds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="the edgewarden-detector binary")
    p.add_argument("--data", required=True, help="NAB data folder (<category>/<file>.csv)")
    p.add_argument("--scorer", required=True, help="nab_score.py")
    p.add_argument("--params", help="DetectorParams JSON passed to the detector")
    p.add_argument("--out", help="keep the detector outputs here")
    p.add_argument("--floor-cv", type=float, help="floor on the mean out-of-category standard score")
    p.add_argument("--floor-flat", type=float,
                   help="floor on the standard score at 0.8x and 1.2x the in-sample threshold")
    p.add_argument("--floor-dev", type=float, help="floor on the in-sample standard score")
    p.add_argument("--floor-lab", type=float,
                   help="floor on the mean standard score of the --lab corpora at the in-sample thresholds")
    p.add_argument("--lab", action="append", default=[],
                   help="a further corpus (DIR/data/<category>/<file>.csv and DIR/labels.json, "
                        "e.g. from nab_lab.py) scored at the in-sample thresholds; repeatable")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "out")
        print(run_detector(args, args.data, out))

        dev_th = os.path.join(tmp, "th-dev.json")
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            folds = list(pool.map(lambda g: fold(args, out, tmp, g), GROUPS))
            dev = scorer(args, out, "--save-thresholds", dev_th)
            with open(dev_th) as fh:
                t = json.load(fh)["standard"]["threshold"]
            # Flatness: the detector's own threshold (which also starts its refractory
            # period) moved by -20 % and +20 %, scored at that threshold.
            base = {}
            if args.params:
                with open(args.params) as fh:
                    base = json.load(fh)
            own = base["threshold"] if "threshold" in base else default_threshold(args)

            def moved(k):
                pf = os.path.join(tmp, "params-%s.json" % k)
                with open(pf, "w") as fh:
                    json.dump(dict(base, threshold=k * own), fh)
                o = os.path.join(tmp, "out-%s" % k)
                run_detector(args, args.data, o, pf)
                return scorer(args, o, "--threshold", repr(k * own))["standard"]
            flat = dict(zip((0.8, 1.0, 1.2), pool.map(moved, (0.8, 1.0, 1.2))))
            labs = []
            for i, lab in enumerate(args.lab):
                lab_out = os.path.join(tmp, "lab%d" % i)
                run_detector(args, os.path.join(lab, "data"), lab_out)
                common = [lab_out, "--labels", os.path.join(lab, "labels.json"),
                          "--data", os.path.join(lab, "data")]
                fixed = scorer(args, *common, "--thresholds-json", dev_th)
                best = scorer(args, *common)
                labs.append((lab, fixed, best))

    print("%-16s %-8s %9s %9s %12s" % ("held out", "profile", "train", "held-out", "threshold"))
    cv = {k: 0.0 for k in PROFILES}
    for name, train, test, thresholds in folds:
        for k in PROFILES:
            cv[k] += test[k] / len(folds)
            print("%-16s %-8s %9.2f %9.2f %12.6g" % (
                name, k, train[k], test[k], thresholds[LONG[k]]["threshold"]))
    print("out-of-category mean: " + " ".join("%s=%.2f" % (k, cv[k]) for k in PROFILES))
    print("in-sample (25 files): " + " ".join("%s=%.2f" % (k, dev[k]) for k in PROFILES)
          + " (threshold %.6g)" % t)
    print("standard with the detector's threshold x0.8 / x1.0 / x1.2: %.2f / %.2f / %.2f"
          % (flat[0.8], flat[1.0], flat[1.2]))
    for lab, fixed, best in labs:
        print("lab %s at the in-sample thresholds: %s (at its own best threshold: %s)" % (
            lab, " ".join("%s=%.2f" % (k, fixed[k]) for k in PROFILES),
            " ".join("%s=%.2f" % (k, best[k]) for k in PROFILES)))
    lab_mean = (sum(f["standard"] for _, f, _ in labs) / len(labs)) if labs else float("nan")
    flat_min = min(flat[0.8], flat[1.2])
    print("NABCV cv_standard=%.2f cv_low_fp=%.2f cv_low_fn=%.2f dev_standard=%.2f "
          "flat_min=%.2f flat_0.8=%.2f flat_1.2=%.2f lab_standard=%.2f"
          % (cv["standard"], cv["low_fp"], cv["low_fn"], dev["standard"], flat_min,
             flat[0.8], flat[1.2], lab_mean))
    bad = []
    if args.floor_cv is not None and cv["standard"] < args.floor_cv:
        bad.append("out-of-category standard %.2f < %.2f" % (cv["standard"], args.floor_cv))
    if args.floor_flat is not None and flat_min < args.floor_flat:
        bad.append("standard at 0.8x/1.2x threshold %.2f < %.2f" % (flat_min, args.floor_flat))
    if args.floor_dev is not None and dev["standard"] < args.floor_dev:
        bad.append("in-sample standard %.2f < %.2f" % (dev["standard"], args.floor_dev))
    if args.floor_lab is not None and labs and lab_mean < args.floor_lab:
        bad.append("lab standard %.2f < %.2f" % (lab_mean, args.floor_lab))
    if bad:
        sys.exit("NAB cross-category floors not reached: " + "; ".join(bad))


if __name__ == "__main__":
    main()
