-- The documentation as a reader finds it: README.md a front door of at most
-- 250 lines that leads to every page under docs/, and no page that sends
-- its reader to a file, a heading or a repository path that is not there.
-- (The pages' marked code blocks are run by spec/examples_spec.lua.)
local shell = require "spec.support.shell"

local README_LINES = 250
-- What `make docs` writes; not kept in the repository.
local GENERATED = { "^docs/reference/", "^build/" }

local function generated(path)
  for _, pattern in ipairs(GENERATED) do
    if path:find(pattern) then return true end
  end
  return false
end

-- Every file and folder of the checkout (paths without "./"), build/ and
-- .git/ left out: a set, and the sorted list of the files.
local function tree()
  local out = shell.run("find . \\( -path ./build -o -path ./.git \\) -prune -o \\( -type f -printf 'f %P\\n' \\) "
    .. "-o \\( -type d -printf 'd %P\\n' \\)")
  local set, files = {}, {}
  for kind, path in assert(out, "find failed"):gmatch("([fd]) ([^\n]*)") do
    if path ~= "" then
      set[path] = kind
      if kind == "f" then files[#files + 1] = path end
    end
  end
  table.sort(files)
  return set, files
end

local function read(path)
  return assert(shell.read(path), "cannot read " .. path)
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or ""
end

-- `base`/`rel` with "." and ".." resolved; nil when it climbs out of the checkout.
local function resolve(base, rel)
  local parts = {}
  for part in ((base ~= "" and base .. "/" or "") .. rel):gmatch("[^/]+") do
    if part == ".." then
      if #parts == 0 then return nil end
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return table.concat(parts, "/")
end

-- The text of a Markdown file split into prose (code blocks and code spans
-- blanked) and the code (blocks and spans), each a list of strings.
local function split(text)
  local prose, code = {}, {}
  local in_block = false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      in_block = not in_block
    elseif in_block then
      code[#code + 1] = line
    else
      prose[#prose + 1] = line:gsub("`[^`]*`", function(span)
        code[#code + 1] = span:sub(2, -2)
        return ""
      end)
    end
  end
  return prose, code
end

-- The anchors of a file's headings, as GitHub makes them: the heading's
-- text (code included) in lower case, punctuation dropped, each space a
-- hyphen; a repeated heading gets -1, -2, … .
local function anchors(text)
  local set, seen, in_block = {}, {}, false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      in_block = not in_block
    elseif not in_block and line:match("^#+%s") then
      local slug = line:match("^#+%s+(.-)%s*$"):lower():gsub("[^%w%s%-_\128-\255]", ""):gsub("%s", "-")
      local n = seen[slug]
      set[n and (slug .. "-" .. n) or slug] = true
      seen[slug] = (n or 0) + 1
    end
  end
  return set
end

-- The relative links of a Markdown file: { target, anchor } (target "" for a
-- link into the same file).
local function links(text)
  local prose = split(text)
  local out = {}
  for _, line in ipairs(prose) do
    for target in line:gmatch("%]%(([^)%s]+)[^)]*%)") do
      if not target:match("^%a[%w+.-]*:") then -- http:, https:, mailto:
        local path, anchor = target:match("^([^#]*)#?(.*)$")
        out[#out + 1] = { path = path, anchor = anchor ~= "" and anchor or nil, raw = target }
      end
    end
  end
  return out
end

-- Words in code that name a path of this repository: they start with one
-- of its top-level folders, climb out of the file's folder ("../"), or name
-- a Markdown file.
local function cited_paths(code, top)
  local out = {}
  for _, text in ipairs(code) do
    for word in text:gmatch("[^%s\"'`()=,;|<>]+") do
      local first = word:match("^([^/]+)/")
      if word:match("^%.%./") or (first and top[first]) or word:match("%w%.md$") then
        word = word:gsub("[.:]$", "")
        -- placeholders ({id}, <version>, …, ?) name no one file
        if not word:find("[{}<>?%[%]$]") and not word:find("\226\128\166", 1, true) then
          out[#out + 1] = word
        end
      end
    end
  end
  return out
end

-- Whether `path` (a file, a folder, or a pattern with *) is in the checkout.
local function present(set, path)
  path = path:gsub("/$", "")
  if not path:find("*", 1, true) then return set[path] ~= nil end
  local pattern = "^" .. path:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", "[^/]*") .. "$"
  for p in pairs(set) do
    if p:match(pattern) then return true end
  end
  return false
end

describe("the documentation", function()
  local set, files = tree()
  local pages = {} -- every Markdown file of the checkout but the generated ones
  for _, path in ipairs(files) do
    if path:match("%.md$") and not generated(path) then pages[#pages + 1] = path end
  end

  it("finds its pages", function()
    assert.truthy(set["README.md"] and set["docs"], "run from the checkout's top folder")
    assert.is_true(#pages >= 10, table.concat(pages, " "))
  end)

  it("starts with a README.md of at most " .. README_LINES .. " lines", function()
    local _, lines = read("README.md"):gsub("\n", "")
    assert.is_true(lines <= README_LINES, "README.md has " .. lines .. " lines")
  end)

  it("leads from README.md to every file under docs/", function()
    local linked, problems = {}, {}
    for _, link in ipairs(links(read("README.md"))) do
      local target = resolve("", link.path)
      if target then linked[target] = true end
    end
    for _, path in ipairs(files) do
      if path:match("^docs/") and not generated(path) then
        if not linked[path] then problems[#problems + 1] = "README.md does not link to " .. path end
      end
    end
    assert.is_true(#problems == 0, table.concat(problems, "\n"))
  end)

  it("links only to files and headings that are there", function()
    local headings, problems = {}, {}
    local function anchors_of(path)
      headings[path] = headings[path] or anchors(read(path))
      return headings[path]
    end
    for _, page in ipairs(pages) do
      for _, link in ipairs(links(read(page))) do
        local target = link.path == "" and page or resolve(dirname(page), link.path)
        if not (target and set[target]) then
          problems[#problems + 1] = page .. " links to " .. link.raw .. ", which is not in the repository"
        elseif link.anchor and target:match("%.md$") and not anchors_of(target)[link.anchor] then
          problems[#problems + 1] = page .. " links to " .. link.raw .. ": " .. target .. " has no such heading"
        end
      end
    end
    assert.is_true(#problems == 0, table.concat(problems, "\n"))
  end)

  it("cites only paths that are in the repository", function()
    local top, problems = {}, {}
    for path, kind in pairs(set) do
      if kind == "d" and not path:find("/", 1, true) and path ~= "build" then top[path] = true end
    end
    for _, page in ipairs(pages) do
      local _, code = split(read(page))
      for _, path in ipairs(cited_paths(code, top)) do
        if not generated(path) then
          -- a path in a page means the checkout's path, or one beside the page
          local here = resolve(dirname(page), path)
          local found = present(set, path) or (here and present(set, here))
          if not found then
            problems[#problems + 1] = page .. " cites " .. path .. ", which is not in the repository"
          end
        end
      end
    end
    assert.is_true(#problems == 0, table.concat(problems, "\n"))
  end)
end)
