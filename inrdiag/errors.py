"""The one exception family of inrdiag.

The engine raises these with a message that names the bad value and what is allowed; only
``inrdiag.cli`` turns them into ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations


class InrdiagError(Exception):
    """Base class: anything the user can fix (bad file, bad flag, too large a request)."""


class CheckpointError(InrdiagError):
    """A checkpoint could not be read, or its tensors do not describe a coordinate MLP."""


class AmbiguousArchitectureError(CheckpointError):
    """The tensors load, but what shapes cannot tell was not given: the message names the flag."""


class SpecError(InrdiagError):
    """An architecture description (ArchSpec) with a value outside what is allowed."""


class ModuleError(InrdiagError):
    """A torch module that cannot be diagnosed as given (its forward, output shape or ``in_features``)."""


class ResourceError(InrdiagError):
    """The request would need more memory than allowed; the message gives the estimate."""


class TargetError(InrdiagError):
    """An image or occupancy target that cannot be used."""


class OutputExistsError(InrdiagError):
    """Refusing to overwrite an existing file without ``--force``."""
