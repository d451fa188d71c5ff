"""``pgbridge bench``: pgbridge against its peers and PostgreSQL's own ceilings.

Modules, one concern each:

* :mod:`~pgbridge.bench.payload` and :mod:`~pgbridge.bench.stats`: the token
  payload every contender carries, and latency summaries;
* :mod:`~pgbridge.bench.contenders`: one small interface over pgbridge, an
  in-process reference bridge and Redis Streams;
* :mod:`~pgbridge.bench.subscriber`: subscribers, run in-process or as a
  separate process (``python -m pgbridge.bench.subscriber``);
* :mod:`~pgbridge.bench.servers`: the embedded server, the scratch database,
  and what the report records about the servers and the code measured;
* :mod:`~pgbridge.bench.ceilings`: raw asyncpg figures on the same server;
* :mod:`~pgbridge.bench.workloads`: the five workloads;
* :mod:`~pgbridge.bench.report`: Markdown, JSON and a chart;
* :mod:`~pgbridge.bench.run`: :func:`~pgbridge.bench.run.run_benchmark` and
  the command line.

This module imports nothing, so a subscriber process starts quickly.
"""
