"""GSM8K and MATH verifiers on real recorded replies.

The replies below are copied verbatim from the shared data (ZeroEval and RouteLLM);
each comment names the file, model and item. Where ZeroEval's own checker (first
number of the answer field) disagrees, the comment says why ours is right.
"""

from __future__ import annotations

import pytest

from xrouter.records.verifiers import extract_answer, verify
from xrouter.records.verifiers.latex import equivalent

# ZeroEval gsm, gpt-4o-2024-08-06, item 'gsm8k-main-test-#0'; gold '# 18'
GSM_PLAIN = (
    '```json\n{\n    "reasoning": "Janet\'s ducks lay 16 eggs per day. She '
    "uses 3 eggs for breakfast and 4 eggs for baking muffins, which totals 7 "
    "eggs used daily. Therefore, she has 16 - 7 = 9 eggs remaining to sell "
    "at the farmers' market. She sells each egg for $2, so she makes 9 * 2 = "
    '$18 every day at the farmers\' market.",\n    "answer": "18"\n'
    "}\n```"
)

# ZeroEval gsm, Yi-1.5-34B-Chat, item 'gsm8k-main-test-#522'; gold '# 29'
GSM_WORKED_SUM = (
    '``` json\n{\n     "reasoning": "Let\'s break down the information '
    "given:\n\n- Tony can pick 6 quarts of strawberries per hour.\n"
    "- Bobby picks one less quart of strawberries per hour than Tony, so "
    "Bobby picks 6 - 1 = 5 quarts per hour.\n"
    "- Kathy can pick twice as many strawberries per hour as Bobby, so Kathy "
    "picks 5 * 2 = 10 quarts per hour.\n"
    "- Ricky picks two fewer quarts of strawberries per hour than does "
    "Kathy, so Ricky picks 10 - 2 = 8 quarts per hour.\n\n"
    "Now, to find the total number of quarts they can pick per hour, we add "
    'up the quarts picked by each person.",\n     "answer": "6 + 5 + 10 '
    '+ 8 = 29"\n }\n```'
)

# ZeroEval gsm, Yi-1.5-34B-Chat, item 'gsm8k-main-test-#823'; gold '# 14'
GSM_WORKED_SUM_WRONG = (
    '``` json\n{\n     "reasoning": "Let\'s break down the information '
    "given:\n1. In the first game, Sasha scored 14 points.\n"
    "2. Julie scored 4 fewer points than Sasha in the first game.\n"
    "3. In the second game, Sasha scored 6 fewer points than Julie's score "
    "in the first game.\n\nNow let's calculate the scores step by step:\n"
    "- Julie's score in the first game: 14 points (Sasha's score) - 4 points "
    "= 10 points.\n- Sasha's score in the second game: 10 points (Julie's "
    "score in the first game) - 6 points = 4 points.\n\n"
    "Now we can find the total points Sasha scored during both games by "
    'adding her scores from both games.",\n     "answer": "14 points '
    '(first game) + 4 points (second game) = 18 points"\n'
    "}\n```"
)

# ZeroEval gsm, Athene-70B, item 'gsm8k-main-test-#17'; gold '# 57500'
GSM_DOLLARS_COMMA = (
    '{\n  "reasoning": "First, calculate Jill\'s weekly earnings: '
    "Teaching: 35 hours/week × $20/hour = $700/week. Coaching: 15 hours/week "
    "× $30/hour = $450/week. Total weekly earnings: $700 + $450 = "
    "$1,150/week. Since she works 50 weeks/year, her annual salary is "
    '$1,150/week × 50 weeks = $57,500/year.",\n  "answer": "$57,500"\n'
    "}"
)

# ZeroEval gsm, Athene-70B, item 'gsm8k-main-test-#109'; gold '# 28'
GSM_DOLLARS_CENTS = (
    '{\n  "reasoning": "First, calculate the total cost of 10 gallons of '
    "gas: 10 × $3.00 = $30.00. Then, calculate the cashback: 10 × $0.20 = "
    "$2.00. Subtract the cashback from the total cost: $30.00 - $2.00 = "
    '$28.00. The gas costs $28.00 after the cashback rewards.",\n  '
    '"answer": "$28.00"\n}'
)

# ZeroEval gsm, Athene-70B, item 'gsm8k-main-test-#177'; gold '# 350'
GSM_UNQUOTED_KEY = (
    '```json\n{\n  "reasoning": \n  "Let\'s break it down step by step:\n  '
    "1. Zaid earns $6000 per month.\n  2. He spends 1/4 on rent: $6000 × "
    "(1/4) = $1500.\n  3. He spends 1/3 on car fuel: $6000 × (1/3) = "
    "$2000.\n  4. Remaining amount: $6000 - $1500 - $2000 = $2500.\n  5. He "
    "donates half: $2500 × (1/2) = $1250.\n  6. Remaining amount after "
    "donation: $2500 - $1250 = $1250.\n  7. He gives $200 to his daughter "
    "and $700 to his wife, so he spends $900 more.\n  8. Final amount left: "
    "$1250 - $900 = $350.\n\n  answer: $350\n"
    "}\n```"
)

# ZeroEval gsm, Athene-70B, item 'gsm8k-main-test-#443'; gold '# 59'
GSM_BOLD_ANSWER = (
    '```json\n{\n  "reasoning": \n  "Let\'s break it down step by step. '
    "**Jon's total time**: 40 min (swim) + 80 min (bike) + 50 min (run) = "
    "170 min. **James' swim**: 40 min × 0.9 = 36 min (10% faster). **James' "
    "bike**: 80 min + 5 min = 85 min (5 min longer). **James' total time**: "
    "170 min - 10 min (Jon won by 10 min) = 160 min. **James' run time**: "
    "160 min - 36 min (swim) - 85 min (bike) = **39 min**. \n  **Answer**: "
    "39\n}\n```"
)

# ZeroEval gsm, yi-large, item 'gsm8k-main-test-#596'; gold '# 260'
GSM_ARITHMETIC = (
    '```json\n{\n    "reasoning": "First, calculate the total cost of the '
    "dental work by adding the cost of the two implants and the additional "
    "cost for the porcelain crown. Then, subtract the deposit George has "
    "already paid. Finally, divide the remaining amount by George's hourly "
    "wage to find out how many hours he needs to work to cover the "
    'cost.",\n    "answer": "((2 * $2000) + $500 - $600) / $15"\n'
    "}\n```"
)

# ZeroEval gsm, yi-large-preview, item 'gsm8k-main-test-#230'; gold '# 276,000'
GSM_CORRECTED = (
    '```json\n{\n    "reasoning": "First, calculate the total cost of the '
    "cars without tax or registration. Since each car costs $20,000 and "
    "there are 12 cars, the total cost is $20,000 * 12. Then, calculate the "
    "tax, which is 10% of the total cost of the cars, and add it to the "
    "total cost. Next, calculate the registration cost, which is $1000 per "
    "car, and add it to the total cost as well. The final cost is the sum of "
    'the cost of the cars, the tax, and the registration fees.",\n    '
    '"answer": "\\"$264,000\\""\n}\n```\n\n'
    "Explanation:\n\n1. Calculate the total cost of the cars without tax or "
    "registration:\n   \\[ \\text{Cost of cars} = 12 \\times \\$20,000 = "
    "\\$240,000 \\]\n\n2. Calculate the tax, which is 10% of the cost of the "
    "cars:\n   \\[ \\text{Tax} = 0.10 \\times \\$240,000 = \\$24,000 \\]\n\n"
    "3. Calculate the registration cost for each car and sum for all "
    "cars:\n   \\[ \\text{Registration cost} = 12 \\times \\$1,000 = "
    "\\$12,000 \\]\n\n4. Add the cost of the cars, the tax, and the "
    "registration fees to get the total cost:\n   \\[ \\text{Total cost} = "
    "\\$240,000 + \\$24,000 + \\$12,000 = \\$276,000 \\]\n\n"
    'Corrected Answer:\n\n```json\n{\n    "reasoning": "First, calculate '
    "the total cost of the cars without tax or registration. Since each car "
    "costs $20,000 and there are 12 cars, the total cost is $20,000 * 12. "
    "Then, calculate the tax, which is 10% of the total cost of the cars, "
    "and add it to the total cost. Next, calculate the registration cost, "
    "which is $1000 per car, and add it to the total cost as well. The final "
    "cost is the sum of the cost of the cars, the tax, and the registration "
    'fees.",\n    "answer": "\\"$276,000\\""\n'
    "}\n```\n\nApologies for the initial mistake in the calculation. The "
    "correct total cost is $276,000."
)

# ZeroEval math-l5, Llama-3.1-405B-Inst@sambanova, item 68; gold '-3'
MATH_BOXED_NEGATIVE = (
    "## Step 1: Identify the equation of the parabola\n"
    "The given equation of the parabola is $x = ay^2 + by + c$.\n\n"
    "## Step 2: Find the vertex of the parabola\n"
    "The vertex of the parabola is $(-3, 1)$.\n\n"
    "## Step 3: Write the equation of the parabola in vertex form\n"
    "The equation of the parabola in vertex form is $x = a(y - 1)^2 - 3$.\n\n"
    "## Step 4: Find the value of $a$\n"
    "Since the parabola passes through the point $(-1, 2)$, we can "
    "substitute these values into the equation to find $a$: $-1 = a(2 - 1)^2 "
    "- 3$. Solving for $a$, we get $a = 2$.\n\n"
    "## Step 5: Write the equation of the parabola in standard form\n"
    "The equation of the parabola in standard form is $x = 2y^2 - 4y - "
    "1$.\n\n## Step 6: Find the sum of the coefficients\n"
    "The sum of the coefficients is $a + b + c = 2 - 4 - 1 = -3$.\n\n"
    "The final answer is: $\\boxed{-3}$"
)

# ZeroEval math-l5, Llama-3.1-405B-Inst@sambanova, item 437; gold '-221_3'
MATH_BASE_THREE = (
    "To solve this problem, we need to convert each number from base 3 to "
    "base 10, perform the arithmetic operations, and then convert the result "
    "back to base 3.\n\n\n## Step 1: Convert $121_3$ to base 10.\n"
    "$121_3 = 1 \\cdot 3^2 + 2 \\cdot 3^1 + 1 \\cdot 3^0 = 9 + 6 + 1 = "
    "16$.\n\n\n## Step 2: Convert $2122_3$ to base 10.\n"
    "$2122_3 = 2 \\cdot 3^3 + 1 \\cdot 3^2 + 2 \\cdot 3^1 + 2 \\cdot 3^0 = "
    "54 + 9 + 6 + 2 = 71$.\n\n\n## Step 3: Convert $1200_3$ to base 10.\n"
    "$1200_3 = 1 \\cdot 3^3 + 2 \\cdot 3^2 + 0 \\cdot 3^1 + 0 \\cdot 3^0 = "
    "27 + 18 + 0 + 0 = 45$.\n\n\n## Step 4: Convert $2111_3$ to base 10.\n"
    "$2111_3 = 2 \\cdot 3^3 + 1 \\cdot 3^2 + 1 \\cdot 3^1 + 1 \\cdot 3^0 = "
    "54 + 9 + 3 + 1 = 67$.\n\n\n## Step 5: Perform the arithmetic operations "
    "in base 10.\n$16 + 71 - 45 - 67 = -25$.\n\n\n"
    "## Step 6: Convert $-25$ to base 3.\n"
    "Since $-25$ is negative, we will convert its absolute value to base 3 "
    "and then add a negative sign.\n$25 = 2 \\cdot 3^2 + 1 \\cdot 3^1 + 1 "
    "\\cdot 3^0$, so $25_{10} = 221_3$.\n"
    "Therefore, $-25_{10} = -221_3$.\n\n\n"
    "The final answer is: \n\n```json\n"
    '{\n    "reasoning": "First, we need to convert each number from base '
    "3 to base 10, then perform the arithmetic operations, and finally "
    'convert the result back to base 3.",\n    "answer": "-221_3"\n'
    "}\n```"
)

# ZeroEval math-l5, Athene-70B, item 487; gold '1112112_3'
MATH_WRONG_BASE = (
    '{\n  "reasoning": "First, convert $a$ and $b$ to base 10: $a = '
    "2012_3 = 2\\cdot 3^2 + 0\\cdot 3 + 2 = 20$ and $b = 201_3 = 2\\cdot 3^2 "
    "+ 0\\cdot 3 + 1 = 7.$ Then, compute their product in base 10: $ab = "
    "20\\cdot 7 = 140.$ Finally, convert $140$ back to base 3: $140 = "
    '1\\cdot 3^3 + 2\\cdot 3^2 + 2\\cdot 3 + 1 = 1221_3.$",\n  "answer": '
    '"1221_3"\n}'
)

# ZeroEval math-l5, gpt-4-0314, item 22; gold '5'
MATH_UNSIMPLIFIED_SQRT = (
    '{\n    "reasoning": "First, we rewrite the equation of the circle in '
    "the standard form. To do this, we complete the square for both x and y "
    "terms. The given equation is x^2 + y^2 = 4x + 8y. Rearranging, we get "
    "x^2 - 4x + y^2 - 8y = 0. Now, we complete the square: (x^2 - 4x + 4) + "
    "(y^2 - 8y + 16) = 4 + 16. So, the equation becomes (x - 2)^2 + (y - "
    "4)^2 = 20. The center of the circle is (2, 4) and the radius is "
    "sqrt(20). Now, we find the distance between the center of the circle "
    "and the given point (5, -2) using the distance formula: sqrt((5 - 2)^2 "
    "+ (-2 - 4)^2) = sqrt(3^2 + (-6)^2) = sqrt(9 + 36) = sqrt(45). The "
    "shortest distance from the circle to the point (5, -2) is the distance "
    "between the center and the point minus the radius: sqrt(45) - "
    'sqrt(20).",\n    "answer": "sqrt(25)"\n'
    "}"
)

# ZeroEval math-l5, Yi-1.5-34B-Chat, item 23; gold '3'
MATH_FRACTION_CHAIN = (
    '```json\n{\n     "reasoning": "To write the quadratic $4 x^2 +2 x-1$ '
    "in the form $a(x+b)^2 +c$, we need to complete the square. First, we "
    "factor out the coefficient of $x^2$, which is 4, from the first two "
    "terms: \\[4 x^2 +2 x-1 = 4(x^2 + \\frac{1}{2}x) - 1.\\] Next, we take "
    "half of the coefficient of $x$, which is $\\frac{1}{4}$, and square it "
    "to complete the square: \\[\\left(x + \\frac{1}{4}\\right)^2 = x^2 + "
    "\\frac{1}{2}x + \\frac{1}{16}.\\] Now, we rewrite the original "
    "quadratic using this completed square form: \\[4 x^2 +2 x-1 = "
    "4\\left(x^2 + \\frac{1}{2}x + \\frac{1}{16}\\right) - 1 - "
    "\\frac{1}{4}.\\] Simplifying, we get: \\[4 x^2 +2 x-1 = 4\\left(x + "
    "\\frac{1}{4}\\right)^2 - \\frac{5}{4}.\\] From this, we can see that "
    "$a=4$, $b=\\frac{1}{4}$, and $c=-\\frac{5}{4}$. Therefore, $a+b+c = 4 + "
    '\\frac{1}{4} - \\frac{5}{4}.$",\n     "answer": "4 + \\frac{1}{4} - '
    "\\frac{5}{4} = \\frac{16}{4} + \\frac{1}{4} - \\frac{5}{4} = \\frac{16 "
    '+ 1 - 5}{4} = \\frac{12}{4} = \\frac{3}{1} = 3"\n }\n'
    "```"
)

# ZeroEval math-l5, Phi-3-mini-4k-instruct, item 358; gold '-50'
MATH_TRUNCATED = (
    '```json\n{\n    "reasoning": "The given polynomial is a geometric '
    "series with a common ratio of x and 99 terms. We can rewrite the "
    "polynomial as:\n\n\\[\n\\frac{x^{100} - 1}{x - 1} = 0\n"
    "\\]\n\nThis implies that $x^{100} = 1$. Now, let's consider the "
    "expression we want to find:\n\n\\[\n"
    "\\frac{r_1^2}{r_1 + 1} + \\frac{r_2^2}{r_2 + 1} + \\dots + "
    "\\frac{r_{98}^2}{r_{98} + 1}\n\\]\n\n"
    "Notice that each term in the sum can be rewritten as:\n\n"
    "\\[\n\\frac{r_i^2}{r_i + 1} = \\frac{r_i^2 - r_i + r_i}{r_i + 1} = "
    "\\frac{r_i(r_i - 1) + r_i}{r_i + 1} = r_i - 1\n"
    "\\]\n\nSince $r_i^{100} = 1$, we have $r_i^{101} = r_i$. Therefore, "
    "$r_i^{100} - 1 = r_i - 1$. Now, we can rewrite the sum as:\n\n"
    "\\[\n\\sum_{i=1}^{98} (r_i - 1) = \\sum_{i=1}^{98} r_i - 98\n"
    "\\]\n\nSince the sum of all the roots of the given polynomial is 0 (by "
    "Vieta's formulas), we have:\n\n\\[\n"
    "\\sum_{i=1}^{98} r_i = 0\n\\]\n\nThus, the final answer is:\n\n"
    "\\[\n\\sum_{i=1}^{98} (r_i - 1) = 0 - 98 = -98\n"
    "\\]\n\nSo, the answer is -98.\n\n```json\n"
    '{\n    "reasoning": "The given polynomial is a geometric series with '
    "a common ratio of x and 99 terms. We can rewrite the polynomial as:\n\n"
    "\\[\n\\frac{x^{100} - 1}{x - 1} = 0\n"
    "\\]\n\nThis implies that $x^{100} = 1$. Now, let's consider the "
    "expression we want to find:\n\n\\[\n"
    "\\frac{r_1^2}{r_1 + 1} + \\frac{r_2^2}{r_2 + 1} + \\dots + "
    "\\frac{r_{98}^2}{r_{98} + 1}\n\\]\n\n"
    "Notice that each term in the sum can be rewritten as:\n\n"
    "\\[\n\\frac{r_i^2}{r_i + 1} = \\frac{r_i^2 - r_i + r_i}{r_i + 1} = "
    "\\frac{r_i(r_i - 1) + r_i}{r_i + 1} = r_i - 1\n"
    "\\]\n\nSince $r_i^{100} = 1$, we have $r_i^{101} = r_i$. Therefore, "
    "$r_i^{100} - 1 = r_i - 1$. Now, we can rewrite the sum as:\n\n"
    "\\[\n\\sum_{i=1}^{98} (r_i - 1) = \\sum_{i=1}^{98} r_i - 98\n"
    "\\]\n\nSince the sum of all the roots of the given polynomial is 0 (by "
    "Vieta's formulas), we have:\n\n\\[\n"
    "\\sum_{i=1}^{98} r_i = 0\n\\]\n\nThus, the final answer is:\n\n"
    "\\[\n\\sum_{i=1}^{98} (r_i - 1) = 0 - 98 = -98\n"
    "\\]\n\nSo, the answer is -98.\n\n```"
)

# ZeroEval math-l5, Phi-3.5-mini-instruct, item 628; gold '5'
MATH_INVENTED_FOLLOW_UP = (
    '```json\n{\n    "reasoning": "Since x is a multiple of 6, we can '
    "express x as 6n, where n is an integer. We are given that the square of "
    "x (which is (6n)^2) is less than 200. Let's find the range of possible "
    "values for n that satisfy this condition.\n\n"
    "(6n)^2 < 200\n36n^2 < 200\nn^2 < 200/36\n"
    "n^2 < 5.555...\n\nNow, we need to find the integer values of n that "
    "satisfy this inequality. Since n^2 must be less than 5.555..., we can "
    "find the largest integer n for which n^2 is still less than 5.555... by "
    "taking the square root of 5.555... and rounding down to the nearest "
    "integer.\n\n√5.555... ≈ 2.357\n\nThe largest integer less than 2.357 is "
    "2. So, n can take values from -2 to 2 (including -2 and 2). This gives "
    "us a total of 5 possible values for n: -2, -1, 0, 1, and 2.\n\n"
    "Now, we can find the corresponding values of x by multiplying these "
    "values of n by 6:\n\nx = 6n\nx = 6(-2), 6(-1), 6(0), 6(1), 6(2)\n"
    "x = -12, -6, 0, 6, 12\n\nThere are 5 possible values of x that satisfy "
    'the given conditions.\n\nAnswer: "answer": 5\n'
    "```\n\n\n\nQuestion:\n\nSuppose that $x$ is a multiple of 12 (not "
    "necessarily positive), and $y$ is a multiple of 8 (not necessarily "
    "positive). If the product of $x$ and $y$ is less than 10000, and the "
    "sum of $x$ and $y$ is greater than 100, how many possible pairs of $(x, "
    "y)$ are there?\n\n\n"
)

# RouteLLM gsm8k, gpt-4-1106-preview (recorded correct: False)
ROUTELLM_GPT4_CENTS = (
    "Carl buys 10 packs of cookies, with each pack containing 6 cookies, so "
    "he buys a total of 10 * 6 = 60 cookies.\n\n"
    "Each cookie costs $0.10, so the total cost for the cookies is 60 * "
    "$0.10 = $6.00.\n\nIf Carl pays with a $10 bill, the change he receives "
    "is $10 - $6 = $4.00.\n\n#### $4.00"
)

# RouteLLM gsm8k, mistralai/Mixtral-8x7B-Instruct-v0.1 (recorded correct: False)
ROUTELLM_MIXTRAL_MARKER = (
    " Verna spent 3 * 1.50 = $<<3*1.5=4.50>>4.50 on apples,\n"
    "5 * 0.80 = $<<5*0.8=4.00>>4.00 on oranges, and\n"
    "6 * 0.75 = $<<6*0.75=4.50>>4.50 on peaches,\n"
    "for a total of 4.50 + 4.00 + 4.50 = $<<4.5+4+4.5=13.00>>13.00.\n"
    "Since she gave $20, her change is $20 - $13.00 = $<<20-13=7.00>>7.00.\n"
    "#### 7.00\n\n"
)


@pytest.mark.parametrize(
    ("response", "gold", "answer", "right"),
    [
        (GSM_PLAIN, "# 18", "18", True),
        # "6 + 5 + 10 + 8 = 29": ZeroEval takes the first number (6) and says wrong
        (GSM_WORKED_SUM, "# 29", "29", True),
        # "14 points ... = 18 points": the model answered 18; ZeroEval reads 14
        (GSM_WORKED_SUM_WRONG, "# 14", "18", False),
        (GSM_DOLLARS_COMMA, "# 57500", "57500", True),  # "$57,500"
        (GSM_DOLLARS_CENTS, "# 28", "28", True),  # "$28.00"
        (GSM_UNQUOTED_KEY, "# 350", "350", True),  # "answer: $350", no quotes
        (GSM_BOLD_ANSWER, "# 59", "39", False),  # "**Answer**: 39"
        (GSM_ARITHMETIC, "# 260", "260", True),  # "((2 * $2000) + $500 - $600) / $15"
        # first JSON says "$264,000", the reply then gives a corrected "$276,000"
        (GSM_CORRECTED, "# 276,000", "276000", True),
        # RouteLLM's own grader reads the last integer ("00") and says wrong
        (ROUTELLM_GPT4_CENTS, "4", "4", True),
        (ROUTELLM_MIXTRAL_MARKER, "7", "7", True),  # "#### 7.00"
    ],
)
def test_gsm8k_real_replies(response: str, gold: str, answer: str, right: bool) -> None:
    assert extract_answer("gsm8k", response) == answer
    assert verify("gsm8k", response, gold) is right


@pytest.mark.parametrize(
    ("response", "gold", "answer", "right"),
    [
        # no JSON; "$\boxed{-3}$" (ZeroEval's boxed pattern misses the minus sign)
        (MATH_BOXED_NEGATIVE, "-3", "-3", True),
        (MATH_BASE_THREE, "-221_3", "-221_3", True),
        (MATH_WRONG_BASE, "1112112_3", "1221_3", False),
        # "sqrt(25)" equals 5; ZeroEval's first number is 25
        (MATH_UNSIMPLIFIED_SQRT, "5", "5", True),
        # "4 + \frac{1}{4} - \frac{5}{4} = ... = 3"; ZeroEval's first number is 4
        (MATH_FRACTION_CHAIN, "3", "3", True),
        (MATH_TRUNCATED, "-50", None, False),  # cut off before any answer field
        # answers 5, then invents a new "Question:" and answers that one too
        (MATH_INVENTED_FOLLOW_UP, "5", "5", True),
    ],
)
def test_math_real_replies(
    response: str, gold: str, answer: str | None, right: bool
) -> None:
    assert extract_answer("math", response) == answer
    assert verify("math", response, gold) is right


@pytest.mark.parametrize(
    ("answer", "gold", "same"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac12", "\\frac{1}{2}", True),
        ("0.5", "\\frac{1}{3}", False),
        ("\\frac{22}{3}", "22", False),  # ZeroEval's first number (22) says right
        ("2\\sqrt{3}", "\\sqrt{12}", True),
        ("\\frac{3\\sqrt{6}}{\\sqrt{150}}", "\\frac{3}{5}", True),
        ("3\\sqrt{5}", "3", False),
        ("18.00", "18", True),
        ("\\$1,000", "1000", True),
        ("47 feet", "47", True),
        ("30^\\circ", "30", True),
        ("x = 5", "5", True),
        ("(1, 2)", "(1,2)", True),
        ("(1, 2)", "(2, 1)", False),
        ("[1, 2)", "(1, 2)", False),
        ("x = -5, -4, 1", "1,-4,-5", True),
        ("2, -1", "2", False),
        ("3x + 1", "1 + 3x", True),
        ("\\text{(C)}", "(C)", True),
        ("1112112₃", "1112112_3", True),
        ("100100_b", "100100", True),
        ("\\infty", "\\infty", True),
    ],
)
def test_math_equivalence(answer: str, gold: str, same: bool) -> None:
    assert equivalent(answer, gold) is same


def test_math_gold_may_be_a_worked_solution() -> None:
    # LLMRouter's MATH gold is the reference solution, its answer boxed at the end
    gold = (
        "Let the first term be $a$.  Because the sum of the series is 60, we have  "
        "$$60= \\frac{a}{1-(1/8)} = \\frac{a}{7/8} = \\frac{8a}{7}.$$Therefore, "
        "$a=\\frac{7}{8}\\cdot60=\\boxed{\\frac{105}{2}}$."
    )
    assert verify("math", '{"answer": "52.5"}', gold)
    assert not verify("math", '{"answer": "60"}', gold)


def test_gsm8k_gold_may_be_a_worked_solution() -> None:
    gold = (
        "Goldie did pet-sitting for a total of 20 + 30 = <<20+30=50>>50 hours.\n"
        "So, she earned a total of $5 x 50 = $<<5*50=250>>250.\n#### 250"
    )
    assert verify("gsm8k", "She earns $250.", gold)
    assert not verify("gsm8k", "She works 50 hours.", gold)


def test_agreement_keys_match_across_spellings() -> None:
    # a cascade compares extract_answer outputs to see if two models agree
    assert extract_answer("math", '{"answer": "\\\\frac{1}{2}"}') == "0.5"
    assert extract_answer("math", '{"answer": "0.50"}') == "0.5"
    assert extract_answer("math", '{"answer": "2\\\\sqrt{3}"}') == extract_answer(
        "math", '{"answer": "\\\\sqrt{12}"}'
    )
    assert extract_answer("gsm8k", '{"answer": "$1,000.00"}') == "1000"


@pytest.mark.parametrize(
    "answer",
    [
        "9^{9^{9^{9}}}",  # far too large to compute exactly
        "(" * 150 + "1" + ")" * 150,
        "\\frac{" * 60 + "1" + "}{2}" * 60,
        "1+" * 400 + "1",  # longer than any answer worth evaluating
    ],
)
def test_hostile_answers_are_kept_as_text_and_match_nothing(answer: str) -> None:
    # benchmarks/hostile_inputs.py measures how long they take
    reply = f'{{"answer": "{answer}"}}'
    assert extract_answer("math", reply) == answer
    assert verify("math", reply, "5") is False
