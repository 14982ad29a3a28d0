-- Speech to text in SQL: Whisper tiny.en (converted from a CTranslate2
-- model on PyPI) over spoken clips; long recordings are cut into 30-s
-- windows.

CREATE OR REPLACE MODEL whisper TYPE whisper FROM 'sample-data/models/whisper-tiny-en';

SELECT regexp_replace(path, '.*/', '') AS clip, round(duration, 1) AS seconds,
       transcribe('whisper', audio) AS text
FROM read_audio('sample-data/speech/')
WHERE duration < 30
ORDER BY clip;

-- Search what was said: which clips mention a day of the week?
SELECT regexp_replace(path, '.*/', '') AS clip
FROM read_audio('sample-data/speech/')
WHERE regexp_like(transcribe('whisper', audio), '(Monday|Tuesday|Wednesday|Thursday|Friday)')
ORDER BY clip;
