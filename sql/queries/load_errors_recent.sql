-- Which files failed to load most recently, and why?
SELECT error_at, path, reason
FROM load_errors
ORDER BY error_at DESC, path
LIMIT 50
