"""omoi_os backend: when agent memories get consolidated, as durable, queued jobs."""
