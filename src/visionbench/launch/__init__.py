"""Starting visionbench's own processes: one launcher (``process.Child``) and one message
protocol (``protocol``) for engine workers, cold starts and pinned instances."""
