-- Version 3: job payloads as typed jobs (storage/jobs.py), one spelling per field, for every job already stored.
-- Refits: swaps with "refit_of" become kind 'refit' with only a refit's fields.
UPDATE jobs
   SET kind = 'refit',
       payload = json_object(
           'title', coalesce(json_extract(payload, '$.title'), ''),
           'refit_of', json_extract(payload, '$.refit_of'),
           'max_bytes', json_extract(payload, '$.max_bytes'),
           'identity_id', json_extract(payload, '$.identity_id'),
           'identity_name', coalesce(json_extract(payload, '$.identity_name'), ''),
           'clip_name', coalesce(json_extract(payload, '$.clip_name'), json_extract(payload, '$.filename'), 'clip.mp4'))
 WHERE kind = 'swap' AND json_extract(payload, '$.refit_of') IS NOT NULL;
-- The clip's name was "clip_name" (bot) or "filename" (command line, tests): "clip_name" now.
UPDATE jobs
   SET payload = json_set(json_remove(payload, '$.filename'), '$.clip_name',
                          coalesce(json_extract(payload, '$.clip_name'), json_extract(payload, '$.filename')))
 WHERE kind = 'swap' AND json_type(payload, '$.filename') IS NOT NULL;
-- The face was "face" (1-based, the bot's buttons) or "track" (0-based): "track" now.
UPDATE jobs
   SET payload = CASE json_type(payload, '$.face')
                     WHEN 'integer' THEN json_set(json_remove(payload, '$.face'), '$.track',
                                                  json_extract(payload, '$.face') - 1)
                     ELSE json_remove(payload, '$.face') END
 WHERE kind = 'swap' AND json_type(payload, '$.face') IS NOT NULL;
