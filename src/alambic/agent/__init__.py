"""The support agent the student becomes: retrieval over the business's documents, its tools, hand-offs and
memory. It sits below the stages: release builds its index, eval measures it and serve runs it."""
