"""User-facing errors.

Every problem a user can cause (a bad map, a bad FASTA, an existing output folder,
no GPU, ...) is raised as :class:`ModelAngeloError` with a message that says what is
wrong and what to do. The CLI prints it without a traceback; the ChimeraX layer turns
it into a ``UserError``.
"""


class ModelAngeloError(Exception):
    """An error caused by the input or the environment, with a message for the user."""


class MapError(ModelAngeloError):
    """The cryo-EM map cannot be read or used."""


class SequenceError(ModelAngeloError):
    """The sequence (FASTA) input cannot be read or used."""


class OutputError(ModelAngeloError):
    """The output location cannot be written safely."""


class JobStopped(ModelAngeloError):
    """The user asked a running job to stop."""


class BuildProcessError(ModelAngeloError):
    """A build in the managed environment could not start, crashed or failed."""
