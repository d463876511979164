"""file-indexer: parses, chunks and embeds the files of vector stores."""
