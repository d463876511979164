-- The code interpreter: which file each path of a thread's /mnt/data holds, so that a new
-- session (after an hour idle, a crash, or a rebalance) starts with the thread's files back.
-- Only files the code wrote are listed; the files given to the thread (tool_resources,
-- attachments) are read from their own tables each time.
CREATE TABLE sandbox_files (
    thread_id  text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    path       text NOT NULL,
    file_id    text NOT NULL,
    created_at bigint NOT NULL DEFAULT epoch_now(),
    PRIMARY KEY (thread_id, path)
);
