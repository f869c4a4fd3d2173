-- Why did files fail to load? Failures per reason (details such as sizes and decoder messages cut off),
-- with how many distinct files and the latest attempt.
SELECT trim(replaceRegexpOne(reason, '[:(].*$', '')) AS reason, count() AS failures,
       uniqExact(path) AS files, max(error_at) AS last_error_at
FROM load_errors
GROUP BY reason
ORDER BY failures DESC, reason
