"""Every state a row of the pipeline can be in, and the moves between them, in one place.

The database is the record of unfinished work (see ``service.jobs.transitions``): a row moves
only by a conditional UPDATE from the states a step names, so a duplicated or redelivered task
finds nothing to do. The values are the strings stored in the database and shown by the API and
the CLI; they never change meaning.

Job (``jobs.state``)::

    queued ──resolve──> resolving ──studies found──> retrieving ──all retrieved──> de-identifying
      ^                    │ no study / PACS refuses                                    │
      └─ sweep (stale) ────┘──> failed <── a study failed, dead letter ─────────────────┤
    cancelled <── operator (any non-terminal state)          done <── every study complete
    (scoring: between de-identifying and done once the scoring issue enqueues studies)

Study (``job_studies.state``)::

    pending ──claim──> retrieving ──complete──> de-identifying ──every instance done──> complete
      ^   ^ transient failure (retry, backoff)    │ incomplete after the last attempt     │
      │   └────────────────────────────┘          └──> failed <── an instance failed ─────┘
      └── sweep (stale claim) / operator retry (from failed, cancelled)
    cancelled <── job cancelled (from pending, retrieving; a running C-MOVE gets C-CANCEL)
    Series the retrieval's filter does not move are counted as skipped (with a reason) on the
    study; "complete" means every instance of the series it asked for was de-identified or
    refused by the policy (refused is an outcome, not a failure).

Job instance (``job_instances.state``; one row per spooled file per job)::

    pending ──claim──> processing ──committed──> written | refused
      ^                   │ rejected (quarantined)──> failed
      └── release, sweep ─┘ kept failing ──> dead-lettered ──operator retry──> pending

Received instance (``dicom_received_instances.status``; one row per spooled SOP instance)::

    received ──linked to a job (or none)──> queued ──de-identified──> done | refused

Dead letter (``dead_letters.state``): dead ──operator retry──> retried.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RESOLVING = "resolving"
    RETRIEVING = "retrieving"
    DEIDENTIFYING = "de-identifying"
    SCORING = "scoring"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StudyState(StrEnum):
    PENDING = "pending"
    RETRIEVING = "retrieving"
    DEIDENTIFYING = "de-identifying"
    SCORING = "scoring"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


class InstanceState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    WRITTEN = "written"
    REFUSED = "refused"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"


class ReceivedStatus(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    DONE = "done"
    REFUSED = "refused"


class DeadLetterState(StrEnum):
    DEAD = "dead"
    RETRIED = "retried"


TERMINAL_JOB_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
# a job still moving on its own (refresh_job derives these from its studies)
RUNNING_JOB_STATES = (JobState.RETRIEVING, JobState.DEIDENTIFYING, JobState.SCORING)
# a study an arriving instance may still belong to
ACTIVE_STUDY_STATES = (StudyState.PENDING, StudyState.RETRIEVING, StudyState.DEIDENTIFYING)
TERMINAL_INSTANCE_STATES = (InstanceState.WRITTEN, InstanceState.REFUSED, InstanceState.FAILED,
                            InstanceState.DEAD_LETTERED)
# committed: the de-identified copy and its mapping exist (or the refusal is recorded)
COMMITTED_INSTANCE_STATES = (InstanceState.WRITTEN, InstanceState.REFUSED)
