"""bot: the discord.py front end of famswap.

Modules: ``app`` (Bot + CommandTree subclasses, ``build_bot``/``serve``/``run_bot``), ``cogs/`` (enroll, swap,
identities, admin), ``views/`` (confirm, face picker, enroll form, add-anyway), ``checks``, ``options`` (identity option with
autocomplete), ``uploads`` (download + magic-byte checks), ``progress`` (status messages, the poller), ``results``
(posting outcomes), ``replies`` (error wording). Never imports torch, cv2, mediapipe or swap_engine.

What the bot queues and expects back (the contract with the worker, through storage; the jobs are the typed
dataclasses of ``storage.jobs``):

- ``PrepareJob``, ``identity_ids=[identity_id]``. The worker judges the pending uploads (``record_upload_outcome``),
  stores the face set (``set_faceset`` with a thumbnail grid and ``summary={"text": ...}``) and completes; or fails
  with a message a user can act on. When the new uploads are not the person enrolled before, it stores nothing and
  completes with ``report={"needs_confirm": True, "message": ..., "uploads": [ids left pending]}``; the bot asks
  ("Add anyway" queues ``PrepareJob(add_anyway=True)``, "Leave them out" rejects those uploads).
- ``SwapJob`` (``track`` 0-based: the contact sheet's "Face N" is person N - 1; ``also_*`` further people with their
  faces; ``max_bytes`` the upload limit to fit the video to), the clip as ``input``. Completes with ``video`` (mp4)
  and ``comparison`` (before/after GIF). When a person's face is None and choosing it would be a guess: complete
  with ``report={"needs_choice": True, "faces": N, "choose_for": name, "taken": [faces already chosen, from 1]}``,
  ``comparison`` = the numbered contact sheet and ``video`` = the clip itself (the job's input is dropped when it
  ends; the bot re-reads the clip from there and queues the swap again with that person's face filled in).
- ``RefitJob(refit_of=job_id, max_bytes=...)``: only re-encode ``input`` (a finished video) to at most ``max_bytes``
  and complete with it as ``video``; the bot asks for this when a video is over the guild's limit or Discord
  answers 413.
"""
