"""visionbench fleet: the study on every node of a Ray cluster. Ray code only: the cluster
(``cluster``), what runs on a node (``node``) and the driver (``driver``). The fleet's data
(fleet.json, its store, the median/outlier summary) lives in ``visionbench.results.fleet``."""
