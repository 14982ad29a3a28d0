-- Video as tables: an inventory from the headers, one frame per second
-- written back as thumbnails, and the keyframes of the first 30 seconds.

-- Inventory: FFmpeg probes each file's headers (ranged reads, no decoding).
SELECT regexp_replace(path, '^.*/', '') AS file,
       container,
       codec,
       width || 'x' || height AS size,
       fps,
       round(duration, 2) AS seconds,
       frame_count,
       rotation,
       audio_codec
FROM read_video('sample-data/video/')
ORDER BY file;

-- One frame per second (the first frame at or after each tick), as 160-pixel
-- JPEG thumbnails written back as image files (COPY returns the count).
COPY (
    SELECT regexp_replace(path, '^.*/|[.].*$', '') || '/second-' || CAST(CAST(pts AS INT) AS VARCHAR) AS name,
           frame
    FROM video_frames('sample-data/video/', fps => 1, width => 160, frame_format => 'jpeg')
) TO 'sample-data/out/thumbs/' STORED AS IMAGES OPTIONS (path_column 'name');

SELECT count(*) AS thumbnails, min(width) AS width, max(height) AS max_height
FROM read_images('sample-data/out/thumbs/');

-- Keyframes of the first 30 s: WHERE is_keyframe decodes keyframes only and
-- the pts predicate stops the decoder (see the plan).
EXPLAIN SELECT path, pts, frame
FROM video_frames('sample-data/video/pattern.mp4')
WHERE is_keyframe AND pts < 30;

SELECT regexp_replace(path, '^.*/', '') AS file, pts, frame_index, frame
FROM video_frames('sample-data/video/')
WHERE is_keyframe AND pts < 30
ORDER BY file, pts;
