"""One error hierarchy. Every error the library raises on purpose is a TwinsightError, and its message names the
problem and the fix.

- UserInputError: the caller's input cannot be used (an image, a source, a face, a signature, a setting).
  The app shows the message as it is. Subclasses keep ValueError as a base, so `except ValueError` callers
  written before this module still catch them.
- CapabilityError: the loaded model cannot do what was asked (text search on a model with no text tower).
  Also shown to the user: it says which model can.
- IndexError_ family (IndexMismatchError, IndexFormatError, JournalError): an index on disk does not fit the
  request or is damaged; shown to whoever opened it.
- ServiceError: something on our side failed (a worker process died, a timeout). Never the user's fault: the app
  logs it and shows an internal error with a reference.

Anything else escaping the library (a numpy shape bug, say) is a bug: the app logs it with a reference and never
presents it as the user's mistake.
"""
from __future__ import annotations


class TwinsightError(Exception):
    """Base of every error Twinsight raises on purpose."""


class UserInputError(TwinsightError, ValueError):
    """The input cannot be used; the message says what is wrong and what to do."""


class ConfigError(UserInputError):
    """A setting (a TWINSIGHT_* variable or an option) is not valid."""


class CapabilityError(TwinsightError, RuntimeError):
    """The loaded model cannot do this (e.g. text search without a text tower)."""


class StoredIndexError(TwinsightError, ValueError):
    """An index on disk cannot serve this request: another model, source or format, or damaged."""


class ServiceError(TwinsightError, RuntimeError):
    """Our side failed (a worker died, a timeout): not the caller's fault; retrying may help."""


# Errors whose message the app shows to the user as it is; anything else is logged and shown with a reference.
USER_FACING = (UserInputError, CapabilityError, StoredIndexError)
