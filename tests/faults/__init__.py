"""The fault suite: crashes, outages, rate-limit storms, hangs, budget races, a hostile
environment and hostile input. Each test states what could be lost, and asserts it was not."""
