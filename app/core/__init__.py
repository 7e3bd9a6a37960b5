"""Pure data: settings, batch options, results and their error kinds, statistics, JSON and the clock. No IO
beyond reading the environment, no Flask, no gevent."""
