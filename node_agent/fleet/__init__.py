"""``node-agent fleet``: the operator's commands for the whole farm, a Batch pool and
its Manager at once (status, prune, heal, scale, roll).

Operator-side only: installed with the ``fleet`` extra (``azure-batch``,
``azure-identity``), never shipped in the node's application package
(``packaging/build`` leaves this package out), and never imported on the node's path
(``node_agent.cli`` imports it only when the operator runs ``node-agent fleet``).

Pure modules decide: ``model`` (what was observed, and which worker is a node's),
``agentfile`` (a node's own files), ``times``, ``demand`` (the work the Manager would
hand the pool), ``status``, ``cleanup`` (prune and heal), ``scaling`` and ``roll``.
Thin edges do the I/O: ``batch`` (the Batch service, through the SDK; ``sdk`` finds
its option classes), ``flamenco`` (the Manager), ``observe`` (one snapshot of both),
``scaler`` and ``roller`` (a round and its memory), ``actions`` and ``rolling`` (the
commands), ``looping`` (signals and repetition), ``helptext`` and ``command`` (the
command line).
"""
