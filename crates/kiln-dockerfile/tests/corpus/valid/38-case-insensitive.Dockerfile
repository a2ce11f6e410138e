from alpine as base
run echo lower
Copy file.txt /file.txt
FROM base
eNtRyPoInT ["sh"]
