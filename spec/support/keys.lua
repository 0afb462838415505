-- The test keys, in one place. Fixed values, so a failing spec can be
-- replayed; none of them is a real device's key.
return {
  -- an individual enrollment's key (64 bytes)
  KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA==",
  -- an enrollment group's key (64 bytes); the documentation's example
  GROUP_KEY = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
  -- a valid key that no enrollment holds (32 bytes)
  OTHER_KEY = "cGFzc3dvcmRwYXNzd29yZHBhc3N3b3JkcGFzc3dvcmQ=",
  -- a second individual key (32 bytes), for specs that need two
  KEY_32 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
}
