"""The on-disk log behind the file channel: record format, segment files, checkpoint.

``records`` says how one record is laid out and checked, ``segments`` owns the
append-only files in the channel directory, ``checkpoint`` the compact snapshot
that lets a reopen skip replaying gigabytes, ``replay`` the state rebuilt from
both at start, ``salvage`` what ``logflume channel verify|salvage`` (and
``on_corruption: quarantine``) do with a damaged directory.
``agent.channels.file`` puts them together into a transactional channel.
"""
