"""The Ray Data engine: the local engine's per-chunk stage inside a pool of Ray actors.

- :mod:`~batchrank.scoring.ray.driver`: builds the dataset, runs the actors, collects and
  merges their partial top-k lists (:func:`run_ray`);
- :mod:`~batchrank.scoring.ray.worker`: the actor, which calls the local engine's
  :func:`batchrank.scoring.stage.score_chunk`;
- :mod:`~batchrank.scoring.ray.session`: starting or joining Ray, the Ray Data context, logging.

Importing this package does not import Ray; :func:`run_ray` does.
"""

from batchrank.scoring.ray.driver import DEFAULT_BUCKETS, Combine, run_ray

__all__ = ["DEFAULT_BUCKETS", "Combine", "run_ray"]
