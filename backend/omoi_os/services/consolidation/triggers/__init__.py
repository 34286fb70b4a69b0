"""The three consolidation triggers, and the one write path they share.

manual.py      an operator or the host's code asks for a job now
threshold.py   a memory write brings a project's backlog to the threshold
tick.py        the cron schedule's tick, for every project at once
job_writer.py  what each of them ends in: the job rows and their queue tasks,
               written in the caller's one transaction
"""
