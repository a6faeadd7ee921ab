"""Real-model evaluation harness for tvstore (issue 4).

Fine-tunes all-MiniLM-L6-v2 on three text classification tasks, pushes the
fine-tunes into a fresh registry under every codec setting, rebuilds them and
measures what compression and merging cost in accuracy.  Run it with
``python -m benchmarks.eval.harness`` (``--quick`` for a seconds-long smoke
run on a tiny random BERT).
"""
