-- Audio as tables: durations from the headers, 16 kHz mono resampling for
-- speech models, Whisper-style spectrograms, and long recordings cut into
-- fixed windows.

-- Durations by format: headers only (first and last 64 KiB), no decoding.
SELECT format,
       count(*) AS clips,
       round(sum(duration), 1) AS seconds,
       min(sample_rate) AS min_rate,
       max(sample_rate) AS max_rate
FROM read_audio('sample-data/audio/')
GROUP BY format
ORDER BY format;

-- What a speech model needs: 16 kHz mono, and its log-mel input.
SELECT regexp_replace(path, '^.*/', '') AS file,
       codec,
       channels,
       sample_rate,
       audio_decode(audio, 16000, true) AS speech,
       audio_mel_spectrogram(audio_decode(audio, 16000, true)) AS mel,
       round(audio_rms(audio), 3) AS rms
FROM read_audio('sample-data/audio/')
WHERE duration < 10
ORDER BY file;

-- A 65-second talk cut into 30-second windows (the shape transcription
-- needs); the last window is shorter.
SELECT seg['index'] AS segment,
       seg['start_s'] AS start_s,
       seg['end_s'] AS end_s,
       audio_slice(audio, seg['start_s'], seg['end_s']) AS clip,
       round(audio_rms(audio_slice(audio, seg['start_s'], seg['end_s'])), 3) AS rms
FROM (
  SELECT audio, unnest(audio_segments(duration, 30.0)) AS seg
  FROM read_audio('sample-data/audio/talk.flac')
)
ORDER BY segment;

-- The windows written back as 16 kHz FLAC files (COPY returns the count).
COPY (
  SELECT 'talk-' || seg['index'] AS name,
         audio_resample(audio_slice(audio, seg['start_s'], seg['end_s']), 16000) AS pcm
  FROM (
    SELECT audio, unnest(audio_segments(duration, 30.0)) AS seg
    FROM read_audio('sample-data/audio/talk.flac')
  )
) TO 'sample-data/segments/' STORED AS AUDIO OPTIONS (path_column 'name', format 'flac');

SELECT regexp_replace(path, '^.*/', '') AS file, audio
FROM read_audio('sample-data/segments/')
ORDER BY file;
