#!/usr/bin/env python3
"""Writes the conformance suite's input tables (bids.csv, auctions.csv, persons.csv) beside
this script. Deterministic: the same files on every run; they are committed, so running it
is needed only to change them (and then every recorded Flink result must be recorded again).

Timestamps are written as Flink's csv format writes them (`2024-01-01 00:00:05.980`). Rows
are out of order by at most 1 s, well inside the tables' 5 s watermark delay, so no row is
late and the results do not depend on how a source splits the file.
"""
import datetime
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
START = datetime.datetime(2024, 1, 1, 0, 0, 0)
CHANNELS = ["apple", "google", "facebook", "baidu", "other"]
WORDS = ["books", "garden", "tools", "music", "games"]
CITIES = ["Phoenix", "Boise", "Portland", "Seattle", "Bend"]
STATES = ["AZ", "ID", "OR", "WA", "OR"]
NAMES = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]


def ts(seconds):
    t = START + datetime.timedelta(milliseconds=round(seconds * 1000))
    return t.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % (t.microsecond // 1000)


def main():
    rnd = random.Random(20240101)
    with open(os.path.join(HERE, "bids.csv"), "w") as f:
        for i in range(360):
            at = i * 1.5 + rnd.uniform(0, 2.5)
            auction = rnd.randint(1, 12)
            bidder = rnd.randint(1, 25)
            price = rnd.randint(1, 500)
            amount = "%d.%02d" % (price + price // 4, rnd.randint(0, 99))
            channel = CHANNELS[rnd.randrange(len(CHANNELS))]
            url = "https://www.nexmark.com/%s/item.htm?query=1&channel_id=%d" % (
                WORDS[rnd.randrange(len(WORDS))],
                rnd.randint(1, 9),
            )
            f.write("%d,%d,%d,%s,%s,%s,%s\n" % (auction, bidder, price, amount, channel, url, ts(at)))
    with open(os.path.join(HERE, "auctions.csv"), "w") as f:
        for i in range(1, 13):
            seller = rnd.randint(1, 25)
            category = 10 + i % 4
            reserve = rnd.randint(50, 400)
            f.write("%d,item-%d,%d,%d,%d,%s\n" % (i, i, seller, category, reserve, ts(i * 45.0)))
    with open(os.path.join(HERE, "persons.csv"), "w") as f:
        for i in range(1, 26):
            name = "%s %s" % (NAMES[i % len(NAMES)], NAMES[(i * 3) % len(NAMES)])
            f.write("%d,%s,%s,%s,%s\n" % (i, name, CITIES[i % 5], STATES[i % 5], ts(i * 20.0)))


if __name__ == "__main__":
    main()
