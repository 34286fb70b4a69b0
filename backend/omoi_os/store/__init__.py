"""The SQL of the backend's own tables, one module per table (or pair of tables that
live and die together). Services call these functions inside a session they own;
nothing else in the package reads or writes these tables. The task queue owns its
own table (`services/task_queue.py`)."""
