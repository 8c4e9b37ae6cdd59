"""What keeps the teacher's data, the student and the served agent safe, used by every stage that needs it."""
